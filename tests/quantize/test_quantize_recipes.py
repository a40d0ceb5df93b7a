"""The built-in quantization recipes run end to end (few epochs) and report the quantized artefact."""

from __future__ import annotations

import json

import pytest
import torch

import optiforge
from optiforge.exporters.onnx import OnnxModule
from optiforge.quantization.schemes import candidates


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """The recipes set one thread for the whole process; later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


FAST = ["measure.latency_repeats=3", "measure.throughput_repeats=1", "measure.warmup=1"]


def _op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _rows(report: dict) -> dict:
    return {row["stage"]: row for row in report["stages"]}


def test_quantize_recipe_reports_engine_size_and_exports_int8_onnx(tmp_path):
    optiforge.run_recipe("quantize", ["train.epochs=2", *FAST], out=tmp_path, progress=False, show_table=False)
    report = json.loads((tmp_path / "report.json").read_text())
    rows = _rows(report)
    quantized = rows["quantize"]
    installed = set(candidates("int8_static"))
    assert quantized["engine"] in installed
    assert quantized["engine_reason"]
    assert {row["engine"] for row in quantized["candidates"]} == installed >= {"torch", "onnxruntime"}
    assert (tmp_path / quantized["artifact"]).stat().st_size == quantized["size_bytes"]
    # a .pt2 program carries its graph (about 30 KB), which weighs on a 50k-parameter model
    assert rows["train"]["size_bytes"] / quantized["size_bytes"] > (1.5 if quantized["engine"] == "pt2e" else 2.5)
    assert quantized["value"] > rows["train"]["value"] - 0.05
    onnx_file = tmp_path / report["exports"][0]["artifact"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(onnx_file)  # int8, whichever engine won
    runtime = OnnxModule(onnx_file)
    data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    assert runtime(data.example_input(8)).shape == (8, 10)


def test_qat_stage_fine_tunes_with_the_training_engine(tmp_path):
    overrides = [
        *FAST,
        "train.epochs=1",
        "stages.0.quantize.scheme=qat_int8",
        "stages.0.quantize.finetune.epochs=1",
        "stages.0.quantize.target.max_metric_drop=0.05",
        "export=[onnx]",
    ]
    result = optiforge.run_recipe("quantize", overrides, out=tmp_path, progress=False, show_table=False)
    row = _rows(result.report)["quantize"]
    assert row["engine"] == "torch"
    assert (tmp_path / "quantize" / "qat" / "checkpoint.pt").is_file()  # trained by the training engine
    assert result.report["histories"]["quantize"]  # its epochs are in the report
    assert row["value"] > _rows(result.report)["train"]["value"] - 0.05
    # the stage hands the runner its int8 export: the trained fake quantization as QDQ pairs
    exported = result.run_dir / result.report["exports"][0]["artifact"]
    assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(exported)


@pytest.mark.parametrize("scheme", [pytest.param("qat_int8", marks=pytest.mark.slow), "int4_weight_only"])
def test_quantize_cnn_recipe_other_schemes(tmp_path, scheme):
    overrides = [
        *FAST,
        "train.epochs=1",
        "model.channels=[8, 16, 32]",
        "stages.0.quantize.scheme=" + scheme,
        # int4: torchao by name, whose rule (Linear layers only) the last line checks; OpenVINO also runs int4
        "stages.0.quantize.engine=" + ("torchao" if scheme == "int4_weight_only" else "auto"),
        "stages.0.quantize.finetune.epochs=1",
        "stages.0.quantize.target.max_metric_drop=null",
        "stages.0.quantize.calibration.observer=minmax",
    ]
    result = optiforge.run_recipe("quantize-cnn", overrides, out=tmp_path, progress=False, show_table=False)
    row = _rows(result.report)["quantize"]
    assert row["scheme"] == scheme
    assert (tmp_path / row["artifact"]).is_file()
    if scheme == "qat_int8":
        assert (tmp_path / "quantize" / "qat" / "checkpoint.pt").is_file()  # trained by the training engine
    else:
        assert row["unsupported_layers"] == ["0", "3", "6"]  # torchao leaves convolutions float
