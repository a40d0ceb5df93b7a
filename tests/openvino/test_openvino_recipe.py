"""A recipe's quantize stage on the openvino engine: the IR is the artefact and the export."""

from __future__ import annotations

import json

import pytest
import torch

import optiforge

pytest.importorskip("nncf")


@pytest.fixture(autouse=True)
def _keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quantize_stage_on_openvino_ships_and_exports_int8_ir(tmp_path):
    overrides = [
        "train.epochs=1",
        "measure.latency_repeats=3",
        "measure.throughput_repeats=1",
        "measure.warmup=1",
        "stages.0.quantize.engine=openvino",
        "export=[openvino]",
    ]
    optiforge.run_recipe("quantize", overrides, out=tmp_path, progress=False, show_table=False)
    report = json.loads((tmp_path / "report.json").read_text())
    row = next(row for row in report["stages"] if row["stage"] == "quantize")
    assert row["engine"] == "openvino" and row["artifact"].endswith(".xml")
    assert row["peak_memory_bytes"] is None  # OpenVINO allocates outside PyTorch
    (exported,) = report["exports"]
    ir = tmp_path / exported["artifact"]
    assert ir.suffix == ".xml" and ir.with_suffix(".bin").is_file()
    assert 'type="FakeQuantize"' in ir.read_text()  # the int8 graph, not a float re-conversion
    # the IR's size is its graph and its weights
    assert exported["size_bytes"] == ir.stat().st_size + ir.with_suffix(".bin").stat().st_size
    stage_ir = tmp_path / row["artifact"]
    assert row["size_bytes"] == stage_ir.stat().st_size + stage_ir.with_suffix(".bin").stat().st_size


def test_openvino_export_of_a_pytorch_int8_stage_is_quantized_by_nncf(tmp_path):
    overrides = [
        "train.epochs=1",
        "measure.latency_repeats=3",
        "measure.throughput_repeats=1",
        "measure.warmup=1",
        "stages.0.quantize.engine=torch",
        "export=[openvino]",
    ]
    optiforge.run_recipe("quantize", overrides, out=tmp_path, progress=False, show_table=False)
    report = json.loads((tmp_path / "report.json").read_text())
    ir = tmp_path / report["exports"][0]["artifact"]
    assert 'type="FakeQuantize"' in ir.read_text()  # int8 in OpenVINO's form, from the float original
