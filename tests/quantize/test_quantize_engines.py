"""Engines: ONNX Runtime int8 graphs, ``engine: auto`` choosing by measurement, mixed precision."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

import optiforge
from optiforge.data.loaders import make_loader
from optiforge.exporters.onnx import OnnxModule
from optiforge.quantization import QuantConfig, quantize


@pytest.fixture(scope="module")
def cnn(digits_image):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="cnn2d", channels=[8, 16], hidden=32), digits_image)
    return optiforge.train(
        model, digits_image, optiforge.TrainConfig(epochs=2, optimizer={"lr": 0.1, "momentum": 0.9}), progress=False
    ).model.eval()


@pytest.fixture(scope="module")
def digits_image():
    return optiforge.build_data(optiforge.DataConfig(name="digits", image=True))


@pytest.fixture(scope="module")
def loaders(digits_image):
    return make_loader(digits_image.train, 64), make_loader(digits_image.val, 256)


def _op_types(module: OnnxModule) -> set[str]:
    return {node.op_type for node in onnx.load(str(module.path)).graph.node}


def test_onnxruntime_static_writes_a_qdq_graph_with_int8_weights(cnn, loaders, tmp_path):
    calibration, validation = loaders
    quantized = quantize(
        cnn,
        QuantConfig(scheme="int8_static", engine="onnxruntime"),
        calibration=calibration,
        validation=validation,
        output_dir=tmp_path,
    )
    assert isinstance(quantized, OnnxModule)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(quantized)
    graph = onnx.load(str(quantized.path)).graph
    int8_weights = [item for item in graph.initializer if item.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 4  # two convolutions and two linear layers
    # graph structure and scales weigh on a model this small; the 64-128-128 CNN shrinks 3.7x
    assert quantized.path.stat().st_size < (tmp_path / "onnxruntime" / "float.onnx").stat().st_size / 1.3
    assert quantized.optiforge_quantization["fidelity"]["agreement"] > 0.95


def test_onnxruntime_dynamic_uses_integer_ops(cnn, loaders, tmp_path):
    calibration, _ = loaders
    quantized = quantize(
        cnn, QuantConfig(scheme="int8_dynamic", engine="onnxruntime"), calibration=calibration, output_dir=tmp_path
    )
    assert {"ConvInteger", "MatMulInteger"} & _op_types(quantized)
    x = next(iter(calibration))[0]
    cosine = torch.nn.functional.cosine_similarity(quantized(x), cnn(x).detach()).mean().item()
    assert cosine > 0.99


def test_auto_measures_every_installed_engine_and_says_why(cnn, loaders, tmp_path):
    calibration, validation = loaders
    quantized = quantize(
        cnn,
        QuantConfig(scheme="int8_static", engine="auto"),
        calibration=calibration,
        validation=validation,
        output_dir=tmp_path,
    )
    summary = quantized.optiforge_quantization
    measured = {row["engine"]: row for row in summary["candidates"]}
    assert set(measured) == {"torch", "onnxruntime"}
    assert all(row["throughput_per_s"] > 0 for row in measured.values())
    fastest = max((row for row in measured.values() if row["target_met"]), key=lambda row: row["throughput_per_s"])
    assert summary["engine"] == fastest["engine"]
    assert "fastest" in summary["engine_reason"]


def test_exclude_keeps_named_layers_float(cnn, loaders):
    calibration, _ = loaders
    quantized = quantize(cnn, QuantConfig(scheme="int8_static", engine="torch", exclude=["7"]), calibration=calibration)
    modules = dict(quantized.named_modules())
    # FX fuses Linear+ReLU even when left float; the float Linear sits inside
    assert any(type(module) is torch.nn.Linear for module in modules["7"].modules())
    assert modules["9"].weight().dtype == torch.qint8
    assert quantized.optiforge_quantization["float_layers"] == ["7"]


def test_mixed_precision_keeps_the_most_sensitive_layers_float_until_the_target(cnn, loaders, tmp_path):
    calibration, validation = loaders
    # a cosine this close to 1 is out of reach of a fully int8 model, so the search must keep layers float
    config = QuantConfig(scheme="int8_static", engine="torch", min_fidelity=0.99995)
    quantized = quantize(cnn, config, calibration=calibration, validation=validation, output_dir=tmp_path)
    summary = quantized.optiforge_quantization
    table = json.loads((tmp_path / "torch" / "sensitivity.json").read_text())
    assert [row["layer"] for row in table] and len(table) == 4
    assert (tmp_path / "torch" / "sensitivity.png").stat().st_size > 0
    ranks = [(row["metric_drop"], 1 - row["cosine"]) for row in table]
    assert ranks == sorted(ranks, reverse=True)  # most sensitive first
    assert summary["float_layers"]  # something had to stay float
    assert summary["float_layers"] == [row["layer"] for row in table][: len(summary["float_layers"])]
    modules = dict(quantized.named_modules())
    for name in summary["float_layers"]:
        assert any(type(module) in (torch.nn.Conv2d, torch.nn.Linear) for module in modules[name].modules())


def test_mixed_precision_with_onnxruntime_excludes_nodes(cnn, loaders, tmp_path):
    calibration, validation = loaders
    config = QuantConfig(scheme="int8_static", engine="onnxruntime", exclude=["0"])
    quantized = quantize(cnn, config, calibration=calibration, validation=validation, output_dir=tmp_path)
    graph = onnx.load(str(quantized.path)).graph
    first_conv = next(node for node in graph.node if node.op_type == "Conv")
    # the excluded convolution reads its float input directly, not a dequantized one
    producers = {output: node.op_type for node in graph.node for output in node.output}
    assert producers.get(first_conv.input[0]) != "DequantizeLinear"


def test_onnxruntime_names_layers_it_left_float(cnn, loaders, tmp_path):
    calibration, _ = loaders
    # restricting ONNX Runtime to convolutions leaves the linear layers float, and says so
    from optiforge.quantization import onnx_runtime

    path = optiforge.export(cnn, tmp_path / "f.onnx", "onnx", next(iter(calibration))[0][:1])
    out = onnx_runtime.quantize_onnx(
        path, tmp_path / "q.onnx", scheme="int8_static", calibration=calibration, op_types=["Conv"]
    )
    assert onnx_runtime.unquantized_layers(out, ["0", "3", "7", "9"]) == ["7", "9"]


class TinyEncoder(torch.nn.Module):
    """Token ids and an attention mask in (both int64), a pooled embedding out."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(100, 32)
        self.hidden = torch.nn.Linear(32, 64)
        self.output = torch.nn.Linear(64, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embedding(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.output(torch.relu(self.hidden(pooled)))


@pytest.mark.parametrize(
    "scheme, engines",
    [("int8_dynamic", {"torch", "torchao", "onnxruntime"}), ("int8_static", {"torch", "onnxruntime"})],
)
def test_encoder_with_named_int64_inputs_is_quantized_by_every_engine(tmp_path, scheme, engines):
    torch.manual_seed(0)
    encoder = TinyEncoder().eval()
    loader = [
        {"input_ids": torch.randint(0, 100, (8, 12)), "attention_mask": torch.ones(8, 12, dtype=torch.long)}
        for _ in range(4)
    ]
    quantized = quantize(
        encoder,
        QuantConfig(scheme=scheme, engine="auto", min_fidelity=0.99),
        calibration=loader,
        validation=loader,
        output_dir=tmp_path,
    )
    summary = quantized.optiforge_quantization
    assert {row["engine"] for row in summary["candidates"]} == engines
    assert all(row["error"] is None for row in summary["candidates"])
    assert summary["fidelity"]["cosine"] >= 0.99 and summary["fidelity"]["accuracy"] is None
    with torch.no_grad():
        out = quantized(**loader[0])
    assert out.shape == (8, 16)
