"""Which precisions a device runs at speed, read from the CPU's flags; bf16 without units warns or is refused."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

import optiforge
from optiforge.bench import deployment
from optiforge.config import HardwareConfig
from optiforge.errors import OptiforgeError
from optiforge.hardware import capabilities
from optiforge.quantization import QuantConfig, casts, quantize


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Write a fake /proc/cpuinfo with the given flags."""

    def write(flags: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        monkeypatch.setattr(capabilities, "CPUINFO", path)
        capabilities.cpu_flags.cache_clear()

    yield write
    capabilities.cpu_flags.cache_clear()


def test_a_cpu_with_amx_runs_bf16_and_int8_at_speed(cpuinfo):
    cpuinfo("fpu sse avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile")
    assert capabilities.fast_dtypes("cpu") == {"fp32", "bf16", "int8"}
    assert capabilities.cpu_has_bf16() and not capabilities.cpu_has_fp16()


def test_a_cpu_with_only_avx2_runs_fp32_alone(cpuinfo):
    cpuinfo("fpu sse avx avx2 fma")
    assert capabilities.fast_dtypes("cpu") == {"fp32"}
    assert not capabilities.has_fast("bf16", "cpu")


def test_no_cpuinfo_means_no_claims(tmp_path, monkeypatch):
    monkeypatch.setattr(capabilities, "CPUINFO", tmp_path / "missing")
    capabilities.cpu_flags.cache_clear()
    try:
        assert capabilities.fast_dtypes("cpu") == {"fp32"}
    finally:
        capabilities.cpu_flags.cache_clear()


@pytest.fixture
def no_bf16_units(monkeypatch):
    monkeypatch.setattr(deployment, "has_fast", lambda precision, device="cpu": precision == "fp32")
    monkeypatch.setattr(casts, "has_fast", lambda precision, device="cpu": precision == "fp32")
    if importlib.util.find_spec("openvino") is not None:  # OpenVINO asks the CPU itself
        from optiforge.exporters import openvino

        monkeypatch.setattr(openvino, "bf16_supported", lambda: False)


def test_measuring_under_bf16_without_units_warns_with_the_measured_slowdown(no_bf16_units, digits, small_mlp, caplog):
    with caplog.at_level(logging.WARNING, logger="optiforge"):
        figures = optiforge.measure(
            small_mlp,
            digits,
            config=optiforge.MeasureConfig(latency_repeats=3, throughput_repeats=2),
            hardware=HardwareConfig(precision="bf16"),
        )
    assert figures.deployment["precision"] == "bf16" and figures.deployment["autocast"] is True
    assert any(
        "bf16 on this cpu is emulated" in record.message and "x slower than fp32" in record.message
        for record in caplog.records
    )


def test_a_named_bf16_cast_warns_and_auto_refuses_it_without_units(no_bf16_units, small_mlp, digits, caplog):
    loader = [digits.example_input(32)]
    with caplog.at_level(logging.WARNING, logger="optiforge"):
        cast = quantize(small_mlp, QuantConfig(scheme="bf16", engine="torch"), calibration=loader)
    assert next(cast.parameters()).dtype == torch.bfloat16
    assert any("measured" in record.message and "slower than fp32" in record.message for record in caplog.records)
    # every bf16 engine refuses (torch with the measured slowdown; OpenVINO too, where installed)
    with pytest.raises(OptiforgeError, match=r"'bf16' with engine: auto, but this CPU has no bf16 units \(measured"):
        quantize(small_mlp, QuantConfig(scheme="bf16", engine="auto"), calibration=loader)
