"""Stage kinds that count how often they are applied, so tests see work done or skipped."""

from __future__ import annotations

import pytest
import torch
from pydantic import Field
from torch import nn

import optiforge
from optiforge.config import Config
from optiforge.stages import STAGES, StageContext, StageKind, StageOutput
from optiforge.tasks import task_for


class ScaleConfig(Config):
    """Multiply the last layer's weights by ``factor`` (0 ruins the model); ``fail`` raises instead."""

    factor: float = 1.0
    fail: bool = False
    finetune_epochs: int = Field(0, ge=0)


@pytest.fixture
def applied(monkeypatch):
    """Registers stage kinds ``scale_a`` and ``scale_b``; returns the list of (kind, config) applied."""
    calls: list[tuple[str, ScaleConfig]] = []

    def kind(name: str) -> StageKind:
        def apply(model: nn.Module, config: ScaleConfig, ctx: StageContext) -> StageOutput:
            calls.append((name, config))
            if config.fail:
                raise RuntimeError(f"{name} refuses factor {config.factor}")
            with torch.no_grad():
                [*_, last] = [m for m in model.modules() if isinstance(m, nn.Linear)]
                last.weight.mul_(config.factor)
            return StageOutput(model, info={"factor": config.factor})

        return StageKind(name, ScaleConfig, apply, "test: scale the last layer")

    for name in ("scale_a", "scale_b"):
        monkeypatch.setitem(STAGES._items, name, kind(name))
    return calls


@pytest.fixture
def context(digits, tmp_path):
    def make(resume: bool = False) -> StageContext:
        return StageContext(
            data=digits,
            task=task_for(digits.task),
            hardware=optiforge.HardwareConfig(device="cpu"),
            train_config=optiforge.TrainConfig(epochs=1, batch_size=64),
            stage_dir=tmp_path / "search",
            run_dir=tmp_path,
            resume=resume,
            progress=False,
        )

    return make


@pytest.fixture
def trained(digits, one_thread):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16]), digits)
    return optiforge.train(model, digits, optiforge.TrainConfig(epochs=2, batch_size=64), progress=False).model
