"""The typed configs of distillation (the recipe's ``distill:`` stage parses into these)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from optiforge.config import Config
from optiforge.errors import ConfigError


def _describe(error: ValidationError, name: str) -> str:
    """One line per problem naming the field, e.g. ``DistillConfig.alpha: ... (got 1.5)``."""
    lines = []
    for problem in error.errors():
        where = name
        for part in problem["loc"]:
            if isinstance(part, int):
                where += f"[{part}]"
            elif not str(part).startswith("function-"):
                where += f".{part}"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            lines.append(f"unknown field '{where}'")
        else:
            lines.append(f"{where}: {message} (got {problem.get('input')!r})")
    return "; ".join(lines)


# Set while pydantic validates: then errors stay ValidationErrors, so an outer
# config (or the recipe loader) reports them with the full field path.
_VALIDATING: ContextVar[bool] = ContextVar("_VALIDATING", default=False)


class _PeopleConfig(Config):
    """A config whose Python constructor raises :class:`ConfigError` naming the field.

    ``DistillConfig(alpha=2)`` raises ConfigError; ``model_validate`` (used by
    the recipe loader, which words the error with the stage's path) and
    configs nested in another keep pydantic's ValidationError.
    """

    def __init__(self, **data: Any) -> None:
        if _VALIDATING.get():
            super().__init__(**data)
            return
        token = _VALIDATING.set(True)
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigError(_describe(error, type(self).__name__)) from None
        finally:
            _VALIDATING.reset(token)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        token = _VALIDATING.set(True)
        try:
            return super().model_validate(obj, **kwargs)
        finally:
            _VALIDATING.reset(token)


class MixConfig(_PeopleConfig):
    """Input mixing applied to each training batch (student and teacher see the same result)."""

    kind: Literal["none", "mixup", "cutmix", "mixup_cutmix"] = "mixup_cutmix"
    beta: float = Field(1.0, gt=0.0, description="mixing weights are drawn from Beta(beta, beta)")
    probability: float = Field(1.0, ge=0.0, le=1.0, description="share of samples that are mixed")


class HintConfig(_PeopleConfig):
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


class DistillConfig(_PeopleConfig):
    """How a student learns from a teacher.

    The loss is ``(1 − alpha) · task loss + alpha · distillation term + Σ hint
    weight · hint loss``. ``loss`` picks the distillation term on the outputs:
    ``kl`` soft targets at ``temperature`` (scaled by T²), ``mse`` on logits,
    ``cosine``/``mse`` for encoders whose output is a pooled embedding.
    """

    loss: Literal["kl", "mse", "cosine"] = "kl"
    temperature: float = Field(2.0, gt=0.0)
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the distillation term")
    epochs: int = Field(150, ge=1, description="patient teaching: long schedules by default")
    mixing: MixConfig = MixConfig()
    hints: list[HintConfig] = Field(default_factory=list)
    cache_teacher: bool = Field(False, description="compute teacher outputs once (needs mixing.kind: none)")

    @model_validator(mode="after")
    def _cache_needs_fixed_inputs(self) -> DistillConfig:
        if self.cache_teacher and self.mixing.kind != "none":
            raise ValueError(
                "cache_teacher needs the same inputs every epoch; set mixing.kind: none "
                "(with mixing the teacher must run on each mixed batch)"
            )
        if self.cache_teacher and self.hints:
            raise ValueError("cache_teacher stores outputs only; it cannot be combined with hints")
        return self
