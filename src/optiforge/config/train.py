"""One training run, and training inside a stage (fine-tuning)."""

from __future__ import annotations

import math
import operator
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from optiforge.config.base import Config
from optiforge.config.optimizer import OptimizerConfig, ScheduleConfig


class EarlyStoppingConfig(Config):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0.0)


class GradientConfig(Config):
    """What happens to gradients between backward and the optimizer step."""

    clip_norm: float | None = Field(None, gt=0.0, description="clip the global gradient norm to this")
    accumulation_steps: int = Field(1, ge=1, description="backward passes summed into one optimizer step")


class ValidationConfig(Config):
    """When the validation split is scored, and whether a stalled score ends training."""

    every_epochs: int | float = Field(
        1,
        gt=0,
        description="epochs between validation passes (the last epoch always has one); a fraction such as 0.5 "
        "also checks train.stop_at mid-epoch, so a run stops within that share of an epoch of reaching its target",
    )
    early_stopping: EarlyStoppingConfig | None = None

    @field_validator("every_epochs")
    @classmethod
    def _whole_or_fraction(cls, value: int | float) -> int | float:
        if value >= 1:
            if value != int(value):
                raise ValueError(f"give a whole number of epochs or a fraction below 1 (e.g. 0.5), got {value}")
            return int(value)
        return value


class TrainConfig(Config):
    """One training run. ``lr`` at this level is a shorthand for ``optimizer.lr``."""

    renamed_fields: ClassVar[dict[str, str]] = {
        "grad_clip_norm": "gradients.clip_norm",
        "accumulation_steps": "gradients.accumulation_steps",
        "eval_every": "validation.every_epochs",
        "early_stopping": "validation.early_stopping",
        "data_on_device": "../hardware.data_on_device",
    }

    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    epochs: int = Field(10, ge=0)
    batch_size: int | Literal["auto"] = Field(64, description="samples per step, or 'auto': chosen by throughput")
    gradients: GradientConfig = GradientConfig()
    validation: ValidationConfig = ValidationConfig()
    stop_at: dict[str, float] | None = Field(
        None,
        description="stop after the first validation pass whose metric reaches this, e.g. {accuracy: 0.96}",
    )
    seed: int = 0

    @field_validator("batch_size", mode="before")
    @classmethod
    def _size_or_auto(cls, value: Any) -> Any:
        if value == "auto":
            return value
        try:
            size = operator.index(value)  # ints, NumPy ints; not 1.5 or '64'
        except TypeError:
            raise ValueError("Input should be an integer >= 1 or 'auto'") from None
        if isinstance(value, bool) or size < 1:
            raise ValueError("Input should be an integer >= 1 or 'auto'")
        return size

    @model_validator(mode="after")
    def _fractions_serve_stop_at(self) -> TrainConfig:
        if self.validation.every_epochs < 1 and self.stop_at is None:
            raise ValueError(
                f"validation.every_epochs: {self.validation.every_epochs} validates mid-epoch for train.stop_at only; "
                "set train.stop_at (e.g. {accuracy: 0.96}) or give a whole number of epochs"
            )
        return self

    @field_validator("stop_at")
    @classmethod
    def _one_target(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        if len(value) != 1:
            raise ValueError("give one metric and its target, e.g. {accuracy: 0.96}")
        ((name, target),) = value.items()
        if not math.isfinite(target):
            raise ValueError(f"the target for '{name}' must be a finite number")
        return value

    @model_validator(mode="before")
    @classmethod
    def _lr_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lr" in data:
            data = dict(data)
            optimizer = data.get("optimizer") or {}
            if isinstance(optimizer, BaseModel):
                optimizer = optimizer.model_dump()
            if not isinstance(optimizer, dict):
                return data  # the optimizer field's own validation names the problem
            optimizer = dict(optimizer)
            optimizer["lr"] = data.pop("lr")
            data["optimizer"] = optimizer
        return data


class FinetuneConfig(Config):
    """Training inside a stage (fine-tuning, QAT, distillation): unset fields take the recipe's ``train:``.

    One shape for every stage that trains: ``finetune: {epochs: 5, lr: 0.01}``.

    >>> FinetuneConfig(epochs=3, lr=0.01).train_config(TrainConfig(epochs=30)).optimizer.lr
    0.01
    """

    epochs: int = Field(0, ge=0)
    lr: float | None = Field(None, gt=0.0, description="learning rate (default: the recipe's, or the stage's rule)")
    optimizer: OptimizerConfig | None = None
    schedule: ScheduleConfig | None = None
    batch_size: int | None = Field(None, ge=1)

    def train_config(self, base: TrainConfig, default_lr: float | None = None) -> TrainConfig:
        """``base`` with this config's fields put in; ``default_lr`` applies when ``lr`` is unset."""
        optimizer = self.optimizer or base.optimizer
        lr = self.lr if self.lr is not None else default_lr
        if lr is not None:
            optimizer = optimizer.model_copy(update={"lr": lr})
        update: dict[str, Any] = {"epochs": self.epochs, "optimizer": optimizer}
        if self.schedule is not None:
            update["schedule"] = self.schedule
        if self.batch_size is not None:
            update["batch_size"] = self.batch_size
        return base.model_copy(update=update)
