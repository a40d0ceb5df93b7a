"""ONNX export runs in ONNX Runtime with PyTorch's results, float and int8.

Tolerances: a float graph matches PyTorch to 1e-4 (kernel rounding only).
An int8 graph is quantized by ONNX Runtime from the same float model and
calibration batches as the PyTorch int8 model; rounding of scales differs
between the two, so they must agree on the class of ≥ 97% of inputs and
keep an output cosine ≥ 0.99 with each other.
"""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

import optiforge
from optiforge.data.loaders import make_loader
from optiforge.exporters import export
from optiforge.exporters.onnx import FLOAT_TOLERANCE, OnnxModule, export_onnx, max_difference
from optiforge.quantization import QuantConfig, calibration_reader, quantize, quantize_onnx, quantize_with_result
from optiforge.training.loop import TrainResult


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[64, 32]), digits)
    return optiforge.train(
        model, digits, optiforge.TrainConfig(epochs=3, optimizer={"lr": 0.1, "momentum": 0.9}), progress=False
    ).model.eval()


def _ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_float_export_matches_pytorch_with_a_dynamic_batch(trained, digits, tmp_path):
    path = export(trained, tmp_path / "model.onnx", "onnx", digits.example_input(1))
    runtime = OnnxModule(path)
    x = digits.example_input(37)
    assert max_difference(trained, runtime, x) < FLOAT_TOLERANCE


def test_onnx_module_is_measured_like_any_module(trained, digits, tmp_path):
    runtime = OnnxModule(export_onnx(trained, tmp_path / "m.onnx", digits.example_input(1)))
    figures = optiforge.measure(
        runtime, digits, artifact=runtime.path, config=optiforge.MeasureConfig(latency_repeats=3, throughput_repeats=2)
    )
    expected = optiforge.measure(
        trained, digits, config=optiforge.MeasureConfig(latency_repeats=3, throughput_repeats=2)
    )
    assert figures.value == pytest.approx(expected.value)
    assert figures.size_bytes == runtime.path.stat().st_size
    assert figures.throughput_per_s > 0
    assert expected.peak_memory_bytes > 0
    assert figures.peak_memory_bytes is None  # ONNX Runtime's memory is not PyTorch's to count


def test_int8_model_from_pytorch_exports_an_int8_graph_that_agrees(trained, digits, tmp_path):
    calibration = make_loader(digits.train, 64)
    result = quantize_with_result(trained, QuantConfig(scheme="int8_static", engine="torch"), calibration=calibration)
    quantized = result.model
    path = result.export_onnx(tmp_path / "int8.onnx", digits.example_input(1))
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(path)
    float_path = export_onnx(trained, tmp_path / "float.onnx", digits.example_input(1))
    assert path.stat().st_size < float_path.stat().st_size / 2  # 3.7x on the 64-128-128 CNN; graph overhead here
    runtime = OnnxModule(path)
    x = digits.example_input(len(digits.test))
    with torch.no_grad():
        expected = quantized(x)
    actual = runtime(x)
    assert (actual.argmax(1) == expected.argmax(1)).float().mean() >= 0.97
    assert torch.nn.functional.cosine_similarity(actual, expected).mean() >= 0.99


def test_qat_model_exports_its_trained_fake_quantization_as_qdq(trained, digits, tmp_path):
    calibration = make_loader(digits.train, 64)

    def finetune(prepared: nn.Module, config, callbacks=(), name="finetune", lr_scale=1.0) -> TrainResult:
        prepared.train()
        with torch.no_grad():
            for inputs, _ in calibration:  # observers settle on real ranges
                prepared(inputs)
        return TrainResult(prepared.eval())

    result = quantize_with_result(trained, QuantConfig(scheme="qat_int8"), calibration=calibration, finetune=finetune)
    quantized = result.model
    path = result.export_onnx(tmp_path / "qat.onnx", digits.example_input(1))
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(path)
    x = digits.example_input(len(digits.test))
    with torch.no_grad():
        expected = quantized(x)
    actual = OnnxModule(path)(x)
    assert (actual.argmax(1) == expected.argmax(1)).float().mean() >= 0.97


class TwoInputs(nn.Module):
    """Stands in for an encoder: token ids and an attention mask, both int64."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 16)
        self.projection = nn.Linear(16, 8)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.projection(pooled)


def test_quantize_onnx_takes_any_input_structure_and_excludes_nodes(tmp_path):
    torch.manual_seed(0)
    model = TwoInputs().eval()

    def batch():
        return {"input_ids": torch.randint(0, 50, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long)}

    example = batch()
    path = export_onnx(
        model,
        tmp_path / "enc.onnx",
        example,
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
    )
    runtime = OnnxModule(path)
    assert runtime.input_names == ["input_ids", "attention_mask"]
    assert max_difference(model, runtime, example) < FLOAT_TOLERANCE
    loader = [batch() for _ in range(3)]
    reader = calibration_reader(loader, runtime.input_names)
    assert sorted(reader.get_next()) == ["attention_mask", "input_ids"]
    out = quantize_onnx(
        path,
        tmp_path / "enc-int8.onnx",
        scheme="int8_static",
        calibration=loader,
        nodes_to_exclude=["/projection/Gemm"],
    )
    graph = onnx.load(str(out)).graph
    gemm = next(node for node in graph.node if node.op_type == "Gemm")
    producers = {output: node.op_type for node in graph.node for output in node.output}
    assert producers.get(gemm.input[1]) != "DequantizeLinear"  # its weights stayed float
    quantized = OnnxModule(out)(example)
    assert torch.nn.functional.cosine_similarity(quantized, model(**example).detach()).mean() > 0.99


def test_onnx_runtime_model_exports_as_its_own_file(trained, digits, tmp_path):
    calibration = make_loader(digits.train, 64)
    quantized = quantize(
        trained,
        QuantConfig(scheme="int8_dynamic", engine="onnxruntime"),
        calibration=calibration,
        output_dir=tmp_path / "q",
    )
    path = export(quantized, tmp_path / "out.onnx", "onnx", digits.example_input(1))
    assert path.read_bytes() == quantized.path.read_bytes()


def test_half_precision_model_exports_its_float_graph_with_a_warning(trained, digits, tmp_path, caplog):
    half = quantize_with_result(trained, QuantConfig(scheme="bf16", engine="torch"))
    with caplog.at_level("WARNING", logger="optiforge"):
        path = half.export_onnx(tmp_path / "half.onnx", digits.example_input(1))
    assert "no CPU kernels for bf16" in caplog.text
    assert max_difference(trained, OnnxModule(path), digits.example_input(16)) < FLOAT_TOLERANCE
