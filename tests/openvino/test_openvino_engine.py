"""The openvino engine: conversion, NNCF int8 and weight compression, IR that plain OpenVINO runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import optiforge
from optiforge.data.loaders import make_loader
from optiforge.errors import ConfigError
from optiforge.exporters import export
from optiforge.exporters.openvino import FLOAT_TOLERANCE, OpenVinoModule, bf16_supported, convert, save_ir
from optiforge.quantization import QuantConfig, quantize_with_result

pytest.importorskip("openvino")
pytest.importorskip("nncf")


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[64]), digits)
    return optiforge.train(
        model, digits, optiforge.TrainConfig(epochs=3, optimizer={"lr": 0.1, "momentum": 0.9}), progress=False
    ).model.eval()


@pytest.fixture(scope="module")
def loaders(digits):
    return make_loader(digits.train, 64), make_loader(digits.val, 256)


def test_float_conversion_matches_pytorch_at_any_batch(trained, digits, tmp_path):
    runtime = OpenVinoModule(save_ir(convert(trained, digits.example_input(4)), tmp_path / "float.xml"))
    inputs = digits.example_input(37)  # another batch size than traced: the batch axis is dynamic
    with torch.no_grad():
        expected = trained(inputs)
    assert (runtime(inputs) - expected).abs().max().item() < FLOAT_TOLERANCE
    assert runtime.threads is None and runtime.precision == "f32"


def test_int8_by_nncf_agrees_with_the_float_model_and_ships_int8_ir(trained, loaders, digits, tmp_path):
    calibration, validation = loaders
    result = quantize_with_result(
        trained,
        QuantConfig(scheme="int8_static", engine="openvino"),
        calibration=calibration,
        validation=validation,
        output_dir=tmp_path,
    )
    assert result.engine == "openvino" and isinstance(result.model, OpenVinoModule)
    assert result.fidelity.agreement >= 0.97
    assert result.fidelity.accuracy >= result.fidelity.float_accuracy - 0.02
    graph = result.model.path.read_text()
    assert 'type="FakeQuantize"' in graph  # int8 activations in the shipped graph


def test_weight_compression_stores_int8_and_int4_weights(trained, loaders, tmp_path):
    calibration, validation = loaders
    element_types = {}
    for scheme in ("int8_weight_only", "int4_weight_only"):
        result = quantize_with_result(
            trained, QuantConfig(scheme=scheme, engine="openvino"), calibration=calibration, output_dir=tmp_path
        )
        element_types[scheme] = result.model.path.read_text()
        assert result.model.path.with_suffix(".bin").stat().st_size < 4 * sum(p.numel() for p in trained.parameters())
    assert 'element_type="u8"' in element_types["int8_weight_only"]
    assert 'element_type="i4"' in element_types["int4_weight_only"]


def test_layers_kept_float_are_not_quantized(trained, loaders, tmp_path):
    calibration, _ = loaders
    last = [name for name, module in trained.named_modules() if isinstance(module, torch.nn.Linear)][-1]
    result = quantize_with_result(
        trained,
        QuantConfig(scheme="int8_weight_only", engine="openvino", layers={"exclude": [last]}),
        calibration=calibration,
        output_dir=tmp_path,
    )
    assert last in result.float_layers
    assert result.model.path.read_text().count('element_type="u8"') < 2 * 2  # one layer's weight and zero point


def test_engine_auto_measures_openvino_with_the_others(trained, loaders, tmp_path):
    calibration, validation = loaders
    result = quantize_with_result(
        trained, QuantConfig(scheme="int8_static"), calibration=calibration, validation=validation, output_dir=tmp_path
    )
    tried = {row["engine"]: row for row in result.candidates}
    assert "openvino" in tried
    assert tried["openvino"]["error"] is None and tried["openvino"]["throughput_per_s"] > 0


@pytest.mark.skipif(bf16_supported(), reason="this CPU has bf16 units")
def test_bf16_is_refused_on_a_cpu_without_bf16_units(trained, loaders, tmp_path):
    with pytest.raises(ConfigError, match="bf16 units"):
        quantize_with_result(trained, QuantConfig(scheme="bf16", engine="openvino"), calibration=loaders[0])


def test_exported_ir_runs_in_plain_openvino_without_optiforge(trained, digits, tmp_path):
    path = export(trained, tmp_path / "model.xml", "openvino", digits.example_input(2))
    inputs = digits.example_input(5)
    np.save(tmp_path / "inputs.npy", inputs.numpy())
    script = textwrap.dedent(
        f"""
        import sys, numpy, openvino
        assert "optiforge" not in sys.modules
        # f32: on a CPU with bf16 units OpenVINO's default inference precision is bf16
        compiled = openvino.Core().compile_model(r"{path}", "CPU", {{"INFERENCE_PRECISION_HINT": "f32"}})
        outputs = compiled(numpy.load(r"{tmp_path / "inputs.npy"}"))[0]
        numpy.save(r"{tmp_path / "outputs.npy"}", outputs)
        """
    )
    subprocess.run([sys.executable, "-I", "-c", script], check=True, timeout=120)
    with torch.no_grad():
        expected = trained(inputs).numpy()
    assert np.abs(np.load(tmp_path / "outputs.npy") - expected).max() < FLOAT_TOLERANCE


def test_bench_times_an_ir_file_and_fills_its_inputs(trained, digits, tmp_path, capsys):
    from optiforge.cli import main

    path = export(trained, tmp_path / "model.xml", "openvino", digits.example_input(2))
    assert main(["bench", str(path), "--batch", "4", "--repeats", "3", "--warmup", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["provider"] == "OpenVINO CPU (f32)" and row["batch"] == 4
    assert row["inputs"] == {"input": {"shape": [4, 64], "dtype": "float32"}} and row["p50_ms"] > 0
    path.with_suffix(".bin").unlink()
    assert main(["bench", str(path)]) == 2  # a graph without its weights is refused


def test_report_rows_name_openvino_and_what_its_ir_computes_in(trained, loaders, digits, tmp_path):
    from optiforge.bench.deployment import deploy

    examples = [digits.example_input(1)]
    float_ir = OpenVinoModule(save_ir(convert(trained, digits.example_input(2)), tmp_path / "float.xml"), threads=1)
    form = deploy(float_ir, None, torch.device("cpu"), examples).form
    assert (form.engine, form.precision, form.compiled, form.threads) == ("openvino", "fp32", False, 1)
    int8 = quantize_with_result(
        trained, QuantConfig(scheme="int8_static", engine="openvino"), calibration=loaders[0], output_dir=tmp_path
    ).model
    assert deploy(int8, None, torch.device("cpu"), examples).form.precision == "int8"
