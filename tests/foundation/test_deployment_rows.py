"""Report rows say the form each stage was measured in, and count parameters in the artefact."""

from __future__ import annotations

import torch

import optiforge
from optiforge.bench.deployment import artifact_parameters, precision_of
from optiforge.exporters.onnx import OnnxModule, export_onnx
from optiforge.models.builtin import count_parameters
from optiforge.quantization import QuantConfig, quantize


def test_a_report_row_says_its_deployment_form(tmp_path):
    result = optiforge.run_recipe(
        "quickstart", ["train.epochs=1", "hardware.threads=1"], out=tmp_path, progress=False, show_table=False
    )
    row = result.report["stages"][0]
    assert row["deployment"] == {
        "engine": "torch",
        "precision": "fp32",
        "compiled": False,
        "threads": 1,
        "autocast": False,
    }
    assert row["compile_seconds"] is None
    table = (tmp_path / "report.md").read_text()
    assert "| form |" in table and "| torch fp32 ×1 |" in table


def test_an_onnx_stage_reports_its_real_parameter_count(tmp_path, digits, small_mlp):
    runtime = OnnxModule(export_onnx(small_mlp, tmp_path / "m.onnx", digits.example_input(1)))
    figures = optiforge.measure(runtime, digits, config=optiforge.MeasureConfig(latency_repeats=2))
    assert (figures.params, figures.nonzero_params) == count_parameters(small_mlp)
    assert figures.deployment["engine"] == "onnxruntime" and figures.deployment["precision"] == "fp32"


def test_an_int8_model_is_measured_as_int8_with_its_int8_weights_counted(digits, small_mlp):
    quantized = quantize(small_mlp, QuantConfig(scheme="int8_dynamic", engine="torch"))
    assert precision_of(quantized) == "int8"
    assert artifact_parameters(quantized)[0] >= 64 * 32 + 32 * 10  # the packed int8 weights, not 0


def test_a_bf16_cast_is_measured_as_bf16_and_not_autocast(digits, small_mlp):
    cast = quantize(small_mlp, QuantConfig(scheme="bf16", engine="torch"))
    figures = optiforge.measure(
        cast,
        digits,
        config=optiforge.MeasureConfig(latency_repeats=2, throughput_repeats=1),
        hardware=optiforge.HardwareConfig(precision="fp16"),
    )
    assert figures.deployment["precision"] == "bf16" and figures.deployment["autocast"] is False
    assert torch.is_tensor(cast(digits.example_input(2)))


def test_torchao_weights_held_as_buffers_are_counted(small_mlp):
    quantized = quantize(small_mlp, QuantConfig(scheme="int8_weight_only", engine="torchao"))
    assert precision_of(quantized) == "int8"
    assert artifact_parameters(quantized)[0] == count_parameters(small_mlp)[0]
