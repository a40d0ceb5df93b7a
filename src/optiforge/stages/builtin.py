"""Stage kinds that need nothing beyond the training engine."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from optiforge.config import Config, OptimizerConfig, ScheduleConfig
from optiforge.stages.base import StageContext, StageOutput, register_stage


class TrainStageConfig(Config):
    """Train (or fine-tune) the current model; unset fields take the recipe's ``train:``."""

    epochs: int = Field(5, ge=1)
    optimizer: OptimizerConfig | None = None
    schedule: ScheduleConfig | None = None
    batch_size: int | None = Field(None, ge=1)


@register_stage("train", TrainStageConfig, "train the current model further with the training engine")
def train_stage(model: nn.Module, config: TrainStageConfig, ctx: StageContext) -> StageOutput:
    overrides = {key: value for key, value in config.model_dump(exclude={"epochs"}).items() if value is not None}
    overrides = {key: getattr(config, key) for key in overrides}
    result = ctx.finetune(model, config.epochs, name="train", **overrides)
    return StageOutput(result.model, history=result.history)
