"""The optimizer and the learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from optiforge.config.base import Config


class WeightAverageConfig(Config):
    """An exponential moving average of the weights: what validation scores and training returns."""

    decay: float = Field(
        0.99, gt=0.0, lt=1.0, description="share of the average kept at each optimizer step (0.99: about 100 steps)"
    )


class OptimizerConfig(Config):
    """An optimizer from torch.optim by name (``gd`` and ``sgd`` are SGD)."""

    name: str = "sgd"
    lr: float | Literal["auto"] = Field(0.1, description="a rate > 0, or 'auto': the range test's suggestion")
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="other keyword arguments")
    weight_average: WeightAverageConfig | None = Field(
        None, description="validate, stop on and return an exponential moving average of the weights"
    )

    @field_validator("lr", mode="before")
    @classmethod
    def _rate_or_auto(cls, value: Any) -> Any:
        if value == "auto":
            return value
        try:
            rate = float(value)
        except (TypeError, ValueError):
            raise ValueError("Input should be a number > 0 or 'auto'") from None
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("Input should be a finite number > 0 or 'auto'")
        return rate

    @field_validator("betas")
    @classmethod
    def _betas_are_fractions(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError("each beta must be in [0, 1)")
        return value


class ScheduleConfig(Config):
    """A learning-rate schedule with optional linear warm-up."""

    name: Literal["constant", "step", "multistep", "exponential", "cosine", "onecycle", "plateau"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)
    step_epochs: int = Field(10, ge=1, description="step: epochs between decays")
    milestones: list[int] = Field(default_factory=list, description="multistep: epochs")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor")
    min_lr: float = Field(0.0, ge=0.0)
    patience: int = Field(3, ge=0, description="plateau: epochs without improvement")
