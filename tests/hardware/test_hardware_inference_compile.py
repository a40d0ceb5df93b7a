"""torch.compile for inference: a model that cannot compile runs eagerly and the message says why."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import optiforge
from optiforge.config import HardwareConfig
from optiforge.hardware.inference_compile import FrozenCompiled, compile_for_inference


class RefusesCompilation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@pytest.fixture
def failing_compiler(monkeypatch):
    """torch.compile as it behaves on a model with an operation inductor cannot lower: the first call raises."""

    def compile_(model, **options):
        def run(*inputs, **named):
            raise NotImplementedError("no lowering for this operation")

        return run

    monkeypatch.setattr(torch, "compile", compile_)


def test_a_model_that_cannot_compile_runs_eagerly_and_says_why(failing_compiler, caplog):
    model = RefusesCompilation()
    inputs = torch.randn(4, 64)
    with caplog.at_level(logging.WARNING, logger="optiforge"):
        result = compile_for_inference(model, [inputs])
    assert not result.compiled and result.compile_seconds is None
    assert result.model is model
    assert "torch.compile cannot compile RefusesCompilation (NotImplementedError: no lowering" in result.fallback
    assert "runs eagerly instead" in caplog.text


def test_the_report_row_says_the_stage_ran_eagerly_when_compile_failed(failing_compiler, digits):
    model = nn.Sequential(nn.Flatten(), RefusesCompilation())
    figures = optiforge.measure(
        model,
        digits,
        config=optiforge.MeasureConfig(latency_repeats=2, throughput_repeats=1),
        hardware=HardwareConfig(compile=True),
    )
    assert figures.deployment["compiled"] is False
    assert "cannot compile" in figures.deployment["fallback"]
    assert figures.compile_seconds is None


@pytest.mark.slow
def test_a_compiled_model_matches_eager_and_reports_its_compile_time(digits, small_mlp):
    figures = optiforge.measure(
        small_mlp,
        digits,
        config=optiforge.MeasureConfig(latency_repeats=3, throughput_repeats=2),
        hardware=HardwareConfig(compile=True),
    )
    assert figures.deployment == {
        "engine": "torch",
        "precision": "fp32",
        "compiled": True,
        "threads": torch.get_num_threads(),
        "autocast": False,
    }
    assert figures.compile_seconds > 0
    compiled = FrozenCompiled(small_mlp)
    inputs = digits.example_input(33)
    with torch.no_grad():
        torch.testing.assert_close(compiled(inputs), small_mlp(inputs), atol=1e-5, rtol=1e-4)
