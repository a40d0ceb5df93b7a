"""Stage kinds that need nothing beyond the training engine."""

from __future__ import annotations

from pydantic import Field
from torch import nn

from optiforge.config import FinetuneConfig
from optiforge.stages.base import StageContext, StageOutput, register_stage


class TrainStageConfig(FinetuneConfig):
    """Train (or fine-tune) the current model; unset fields take the recipe's ``train:``."""

    epochs: int = Field(5, ge=1)


@register_stage("train", TrainStageConfig, "train the current model further with the training engine")
def train_stage(model: nn.Module, config: TrainStageConfig, ctx: StageContext) -> StageOutput:
    result = ctx.finetuner(model, config, name="train")
    return StageOutput(result.model, history=result.history, info={"epochs": result.epochs_run})
