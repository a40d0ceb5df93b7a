"""Engines: ONNX Runtime int8 graphs, ``engine: auto`` choosing by measurement, mixed precision."""

from __future__ import annotations

import itertools
import json

import onnx
import pytest
import torch

import optiforge
from optiforge.data.loaders import make_loader
from optiforge.exporters.onnx import OnnxModule
from optiforge.quantization import QuantConfig, quantize, quantize_with_result
from optiforge.quantization.schemes import candidates


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
    result = quantize_with_result(
        cnn,
        QuantConfig(scheme="int8_static", engine="onnxruntime"),
        calibration=calibration,
        validation=validation,
        output_dir=tmp_path,
    )
    quantized = result.model
    assert isinstance(quantized, OnnxModule)
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(quantized)
    graph = onnx.load(str(quantized.path)).graph
    int8_weights = [item for item in graph.initializer if item.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 4  # two convolutions and two linear layers
    # graph structure and scales weigh on a model this small; the 64-128-128 CNN shrinks 3.7x
    assert quantized.path.stat().st_size < (tmp_path / "onnxruntime" / "float.onnx").stat().st_size / 1.3
    assert result.fidelity.agreement > 0.95


def test_a_graph_held_in_memory_is_measured_with_its_int8_weights(cnn, loaders, digits_image):
    quantized = quantize(cnn, QuantConfig(scheme="int8_static", engine="onnxruntime"), calibration=loaders[0])
    assert quantized.path is None  # no output_dir: the graph lives in memory only
    measured = optiforge.measure(quantized, digits_image, config=optiforge.MeasureConfig(latency_repeats=3))
    assert measured.params == sum(parameter.numel() for parameter in cnn.parameters() if parameter.dim() > 1) + sum(
        module.bias.numel() for module in cnn.modules() if getattr(module, "bias", None) is not None
    )
    assert measured.deployment["precision"] == "int8"


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
    result = quantize_with_result(
        cnn,
        QuantConfig(scheme="int8_static", engine="auto"),
        calibration=calibration,
        validation=validation,
        output_dir=tmp_path,
    )
    measured = {row["engine"]: row for row in result.candidates}
    assert set(measured) == set(candidates("int8_static")) >= {"torch", "onnxruntime"}
    # only the candidates meeting the target are timed: the others can never be chosen
    assert all(((row["throughput_per_s"] or 0) > 0) == row["target_met"] for row in measured.values())
    fastest = max((row for row in measured.values() if row["target_met"]), key=lambda row: row["throughput_per_s"])
    assert result.engine == fastest["engine"] and not result.baseline_kept
    assert "best samples/s at batch 256" in result.reason and "output cosine >= 0.99" in result.reason


def test_no_engine_meeting_the_target_ships_the_float_model_and_says_so(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).eval()
    loader = [torch.randn(32, 16) for _ in range(4)]
    result = quantize_with_result(
        model,
        QuantConfig(scheme="int8_static", engine="auto", target={"min_fidelity": 0.999999}),
        calibration=loader,
        output_dir=tmp_path,
    )
    assert result.baseline_kept and result.engine is None
    assert result.model is model  # the float model, unchanged
    assert "no candidate met output cosine >= 0.999999" in result.reason
    assert "the baseline ships unchanged" in result.reason
    assert result.candidates and not any(row["target_met"] for row in result.candidates)
    assert (
        optiforge.quantize(
            model,
            QuantConfig(scheme="int8_static", engine="torch", target={"min_fidelity": 0.999999}),
            calibration=loader,
        )
        is model
    )


def test_no_optiforge_attribute_is_set_on_the_returned_or_the_callers_module(cnn, loaders, tmp_path):
    calibration, _ = loaders
    before = set(vars(cnn))
    result = quantize_with_result(cnn, QuantConfig(scheme="int8_static", engine="torch"), calibration=calibration)
    assert set(vars(cnn)) == before
    for module in (cnn, result.model):
        assert not [name for name in dir(module) if name.startswith(("optiforge", "_qat"))]
    # the int8 ONNX graph comes from the result, which holds the float model and calibration batches
    path = result.export_onnx(tmp_path / "int8.onnx", next(iter(calibration))[0][:1])
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in onnx.load(str(path)).graph.node}


def test_excluded_layers_stay_float(cnn, loaders):
    calibration, _ = loaders
    result = quantize_with_result(
        cnn, QuantConfig(scheme="int8_static", engine="torch", layers={"exclude": ["7"]}), calibration=calibration
    )
    modules = dict(result.model.named_modules())
    # FX fuses Linear+ReLU even when left float; the float Linear sits inside
    assert any(type(module) is torch.nn.Linear for module in modules["7"].modules())
    assert modules["9"].weight().dtype == torch.qint8
    assert result.float_layers == ["7"] and not result.search


def test_mixed_precision_keeps_the_most_sensitive_layer_float_to_meet_the_target(cnn, loaders, tmp_path):
    calibration, validation = loaders
    validation = list(itertools.islice(validation, 1))  # fidelity on 256 samples keeps the dozen builds quick

    def run(folder, **fields):
        config = QuantConfig(scheme="int8_static", engine="torch", calibration={"batches": 2}, **fields)
        return quantize_with_result(cnn, config, calibration=calibration, validation=validation, output_dir=folder)

    table_run = run(tmp_path / "table", sensitivity=True)
    most_sensitive = table_run.sensitivity[0]["layer"]
    one_float = run(tmp_path / "one", layers={"exclude": [most_sensitive]})
    assert one_float.fidelity.cosine > table_run.fidelity.cosine
    # out of reach of the fully int8 model, within reach with the most sensitive layer float
    target = (one_float.fidelity.cosine + table_run.fidelity.cosine) / 2
    result = run(tmp_path / "search", target={"min_fidelity": target})
    table = json.loads((tmp_path / "search" / "torch" / "sensitivity.json").read_text())
    assert [row["layer"] for row in table] == [row["layer"] for row in table_run.sensitivity] and len(table) == 4
    assert (tmp_path / "search" / "torch" / "sensitivity.png").stat().st_size > 0
    ranks = [(row["metric_drop"], 1 - row["cosine"]) for row in table]
    assert ranks == sorted(ranks, reverse=True)  # most sensitive first
    assert not result.baseline_kept and result.target_met
    assert result.float_layers == [most_sensitive]
    assert [row["accepted"] for row in result.search] == [True] and result.search[0]["objective"] == 1
    assert result.fidelity.cosine >= target
    modules = dict(result.model.named_modules())
    assert any(type(module) in (torch.nn.Conv2d, torch.nn.Linear) for module in modules[most_sensitive].modules())


def test_onnxruntime_leaves_excluded_layers_nodes_float(cnn, loaders, tmp_path):
    calibration, validation = loaders
    config = QuantConfig(scheme="int8_static", engine="onnxruntime", layers={"exclude": ["0"]})
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
    [
        # pt2e joins engine: auto only on CPUs with AMX-INT8 (schemes.candidates)
        ("int8_dynamic", {"torch", "torchao", "onnxruntime"}),
        ("int8_static", {"torch", "onnxruntime"}),
    ],
)
def test_encoder_with_named_int64_inputs_is_quantized_by_every_engine(tmp_path, scheme, engines):
    torch.manual_seed(0)
    encoder = TinyEncoder().eval()
    loader = [
        {"input_ids": torch.randint(0, 100, (8, 12)), "attention_mask": torch.ones(8, 12, dtype=torch.long)}
        for _ in range(4)
    ]
    result = quantize_with_result(
        encoder,
        QuantConfig(scheme=scheme, engine="auto", target={"min_fidelity": 0.99}),
        calibration=loader,
        validation=loader,
        output_dir=tmp_path,
    )
    assert {row["engine"] for row in result.candidates} == set(candidates(scheme)) >= engines
    assert all(row["error"] is None for row in result.candidates)
    assert result.fidelity.cosine >= 0.99 and result.fidelity.accuracy is None
    with torch.no_grad():
        out = result.model(**loader[0])
    assert out.shape == (8, 16)
