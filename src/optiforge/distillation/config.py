"""The typed configs of distillation (the recipe's ``distill:`` stage parses into these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from optiforge.config import Config, FinetuneConfig

# fields of the ``distill`` stage that were replaced: the recipe error for an old name points at its replacement
RENAMED = {
    "epochs": "finetune.epochs",
    "optimizer": "finetune.optimizer",
    "schedule": "finetune.schedule",
    "batch_size": "finetune.batch_size",
    "temperature": "loss.temperature",
    "alpha": "loss.alpha",
    "shrink": "student.shrink",
}

# patient teaching: long schedules by default
DEFAULT_EPOCHS = 150


class MixConfig(Config):
    """Input mixing applied to each training batch (student and teacher see the same result)."""

    kind: Literal["none", "mixup", "cutmix", "mixup_cutmix"] = "mixup_cutmix"
    beta: float = Field(1.0, gt=0.0, description="mixing weights are drawn from Beta(beta, beta)")
    probability: float = Field(1.0, ge=0.0, le=1.0, description="share of samples that are mixed")


class HintConfig(Config):
    """Match an intermediate student layer to a teacher layer (FitNets, Romero et al. 2015).

    Layer names are those of ``model.named_modules()`` (``"3"`` in a Sequential,
    ``"encoder.layer.2"`` in a BERT). When the shapes differ a learned linear
    adapter maps the student's features to the teacher's; it is trained with
    the student and dropped afterwards.
    """

    student: str
    teacher: str
    weight: float = Field(1.0, ge=0.0)
    loss: Literal["mse", "cosine"] = "mse"


class DistillLossConfig(Config):
    """The distillation term on the outputs and its weight against the task loss.

    ``kind``: ``kl`` soft targets at ``temperature`` (scaled by T²), ``mse``
    on logits, ``cosine``/``mse`` for encoders whose output is a pooled embedding.
    """

    kind: Literal["kl", "mse", "cosine"] = "kl"
    temperature: float = Field(2.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the distillation term")


class DistillConfig(Config):
    """How a student learns from a teacher.

    The loss is ``(1 − loss.alpha) · task loss + loss.alpha · distillation term
    + Σ hint weight · hint loss``. ``finetune`` is the training run (150 epochs
    unless ``finetune.epochs`` says otherwise; other unset fields take the
    recipe's ``train:``, or :data:`~optiforge.distillation.api.DEFAULT_TRAIN`
    from Python).

    >>> DistillConfig(finetune={"lr": 0.01}).finetune.epochs
    150
    """

    loss: DistillLossConfig = DistillLossConfig()
    finetune: FinetuneConfig = FinetuneConfig(epochs=DEFAULT_EPOCHS)
    mixing: MixConfig = MixConfig()
    hints: list[HintConfig] = Field(default_factory=list)
    cache_teacher: bool = Field(False, description="compute teacher outputs once (needs mixing.kind: none)")

    @model_validator(mode="before")
    @classmethod
    def _patient_by_default(cls, data: Any) -> Any:
        finetune = data.get("finetune") if isinstance(data, dict) else None
        if isinstance(finetune, dict) and "epochs" not in finetune:
            return {**data, "finetune": {**finetune, "epochs": DEFAULT_EPOCHS}}
        if isinstance(finetune, FinetuneConfig) and "epochs" not in finetune.model_fields_set:
            return {**data, "finetune": finetune.model_copy(update={"epochs": DEFAULT_EPOCHS})}
        return data

    @model_validator(mode="after")
    def _checks(self) -> DistillConfig:
        if self.finetune.epochs < 1:
            raise ValueError("finetune.epochs must be at least 1: distillation is a training run")
        if self.cache_teacher and self.mixing.kind != "none":
            raise ValueError(
                "cache_teacher needs the same inputs every epoch; set mixing.kind: none "
                "(with mixing the teacher must run on each mixed batch)"
            )
        if self.cache_teacher and self.hints:
            raise ValueError("cache_teacher stores outputs only; it cannot be combined with hints")
        return self


DistillConfig.renamed_fields = RENAMED
