"""NNCF settings of the openvino engine: validated in QuantConfig and passed to NNCF as written."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optiforge.errors import ConfigError
from optiforge.quantization import QuantConfig, quantize_with_result

pytest.importorskip("openvino")
nncf = pytest.importorskip("nncf")


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), depthwise, nn.Flatten(), nn.Linear(512, 4)).eval()


@pytest.fixture
def nncf_calls(monkeypatch):
    """Every call of nncf.quantize, its keyword arguments recorded, then run for real."""
    calls: list[dict] = []
    real = nncf.quantize

    def spy(model, dataset, **kwargs):
        calls.append(kwargs)
        return real(model, dataset, **kwargs)

    monkeypatch.setattr(nncf, "quantize", spy)
    return calls


def test_preset_and_full_bias_correction_reach_nncf(nncf_calls, tmp_path):
    batches = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    config = QuantConfig(engine="openvino", calibration={"openvino": {"preset": "mixed", "bias_correction": "full"}})
    result = quantize_with_result(tiny_cnn(), config, calibration=batches, output_dir=tmp_path)
    (kwargs,) = nncf_calls
    assert kwargs["preset"] == nncf.QuantizationPreset.MIXED
    assert kwargs["fast_bias_correction"] is False
    assert kwargs["subset_size"] == 3
    assert 'type="FakeQuantize"' in result.model.path.read_text()


def test_bias_correction_none_disables_it_and_defaults_leave_nncf_choosing(nncf_calls, tmp_path):
    batches = [torch.randn(4, 3, 8, 8) for _ in range(2)]
    quantize_with_result(
        tiny_cnn(),
        QuantConfig(engine="openvino", calibration={"openvino": {"bias_correction": "none"}}),
        calibration=batches,
    )
    quantize_with_result(tiny_cnn(), QuantConfig(engine="openvino"), calibration=batches)
    disabled, default = nncf_calls
    assert disabled["advanced_parameters"].disable_bias_correction is True
    assert "preset" not in default and "advanced_parameters" not in default
    assert default["fast_bias_correction"] is True


def test_openvino_settings_are_refused_for_another_engine():
    with pytest.raises(ConfigError, match=r"openvino.*bias_correction.*engine 'onnxruntime'"):
        QuantConfig(engine="onnxruntime", calibration={"openvino": {"bias_correction": "full"}})
    QuantConfig(engine="auto", calibration={"openvino": {"bias_correction": "full"}})  # auto may choose openvino


def test_openvino_settings_are_refused_for_a_scheme_without_calibration():
    with pytest.raises(ConfigError, match="int8_weight_only"):
        QuantConfig(scheme="int8_weight_only", engine="openvino", calibration={"openvino": {"preset": "mixed"}})


def test_unknown_preset_names_the_allowed_values():
    with pytest.raises(ConfigError, match=r"preset.*'performance' or 'mixed'"):
        QuantConfig(engine="openvino", calibration={"openvino": {"preset": "fast"}})


def conv_bn_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.Flatten(), nn.Linear(512, 4),
    )  # fmt: skip
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # not the identity, so OpenVINO folds a real scale and shift
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _fake_quantize_count(path) -> int:
    return path.read_text().count('type="FakeQuantize"')


def test_a_convolution_fused_with_its_batchnorm_is_kept_float_when_excluded(tmp_path):
    from optiforge.quantization.openvino_scope import batchnorm_owners

    model, batches = conv_bn_cnn(), [torch.randn(4, 3, 8, 8) for _ in range(2)]
    assert batchnorm_owners(model, batches[0][:1]) == {"1": "0", "4": "3"}
    counts = {}
    for excluded in ([], ["3"]):
        config = QuantConfig(engine="openvino", layers={"exclude": excluded})
        result = quantize_with_result(model, config, calibration=batches, output_dir=tmp_path / str(len(excluded)))
        counts[len(excluded)] = _fake_quantize_count(result.model.path)
    assert counts[1] < counts[0]  # the second convolution's weights and inputs are no longer quantized


def test_the_ir_takes_the_names_a_model_type_gives_its_graph(tmp_path):
    model = tiny_cnn()  # its forward's argument is called ``input``: the graph's names must win
    model.onnx_input_names, model.onnx_output_names = ("pixel_values",), ("logits",)
    result = quantize_with_result(
        model, QuantConfig(engine="openvino"), calibration=[torch.randn(4, 3, 8, 8)], output_dir=tmp_path
    )
    assert result.model.input_names == ["pixel_values"]
    assert result.model(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    graph = result.model.path.read_text()
    assert 'names="pixel_values"' in graph and 'names="logits"' in graph


def test_an_ir_artifact_weighs_its_graph_and_its_weights(tmp_path):
    from optiforge.files import artifact_size_bytes

    result = quantize_with_result(
        tiny_cnn(), QuantConfig(engine="openvino"), calibration=[torch.randn(4, 3, 8, 8)], output_dir=tmp_path
    )
    graph, weights = result.model.path, result.model.path.with_suffix(".bin")
    assert artifact_size_bytes(graph) == graph.stat().st_size + weights.stat().st_size
    assert artifact_size_bytes(weights) == weights.stat().st_size  # any other file is itself


def test_an_ir_artifact_counts_its_weights_as_parameters(tmp_path):
    from optiforge.bench.deployment import artifact_parameters
    from optiforge.exporters.openvino import OpenVinoModule, convert, save_ir

    model, batches = tiny_cnn(), [torch.randn(4, 3, 8, 8) for _ in range(2)]
    with torch.no_grad():
        model[2].weight[:2] = 0.0  # two depthwise filters pruned
    weights = sum(parameter.numel() for parameter in model.parameters())
    float_ir = OpenVinoModule(save_ir(convert(model, batches[0]), tmp_path / "float.xml"))
    int8_ir = quantize_with_result(model, QuantConfig(engine="openvino"), calibration=batches).model
    assert _fake_quantize_count(int8_ir.path) > 0
    assert artifact_parameters(float_ir) == (weights, weights - 18)
    # scales and ranges of the int8 graph are quantization parameters, not weights; rounding adds zeros
    total, nonzero = artifact_parameters(int8_ir)
    assert total == weights and weights - 18 - 30 < nonzero <= weights - 18
    # weight compression's scales and uint8 zero points are not weights either
    config = QuantConfig(scheme="int8_weight_only", engine="openvino")
    compressed = quantize_with_result(model, config, calibration=batches).model
    assert 'element_type="u8"' in compressed.path.read_text()
    assert artifact_parameters(compressed)[0] == weights
