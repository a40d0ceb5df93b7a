"""Stage ``distill``: train a student from the model coming out of the previous stage.

```yaml
- distill: {student: {model: {name: mlp, hidden: [64]}}, loss: {temperature: 2.0, alpha: 0.9}, finetune: {epochs: 150}}
- distill: {student: {shrink: {width: 0.25}}}            # a narrower model of the teacher's family
- distill: {student: {model: {...}}, teacher: {name: cnn1d, channels: [64, 128, 128], checkpoint: teacher.pt}}
```
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from torch import nn

from optiforge.bench.measure import measure
from optiforge.config import Config, ModelConfig
from optiforge.data.builtin import TaskData
from optiforge.distillation.agreement import top1_agreement
from optiforge.distillation.api import distill_with_result
from optiforge.distillation.config import DistillConfig
from optiforge.distillation.hints import find_layer
from optiforge.distillation.students import shrink
from optiforge.distillation.teachers import check_teacher, resolve_teacher
from optiforge.models.builtin import build_model
from optiforge.stages.base import StageContext, StageOutput, register_stage


class ShrinkConfig(Config):
    """A student of the teacher's family (see ``optiforge.students.shrink``)."""

    width: float | None = Field(None, gt=0.0, le=1.0)
    depth: float | int | None = Field(None, gt=0)


class StudentConfig(Config):
    """The student: a model spec (``model``) or a smaller model of the teacher's family (``shrink``)."""

    model: ModelConfig | None = None
    shrink: ShrinkConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _spec_under_model(cls, data: Any) -> Any:
        if isinstance(data, dict) and data and not set(data) & {"model", "shrink"}:
            raise ValueError("give the student as {model: {name: ..., ...}} (a model spec) or {shrink: {width: ...}}")
        return data

    @model_validator(mode="after")
    def _one_student(self) -> StudentConfig:
        if (self.model is None) == (self.shrink is None):
            raise ValueError("give exactly one of 'model' (a model spec) or 'shrink' (width/depth)")
        return self


class DistillStageConfig(DistillConfig):
    """A distillation run; unset ``finetune`` fields take the recipe's ``train:``."""

    student: StudentConfig
    teacher: ModelConfig | None = Field(None, description="default: the incoming model")


def _teacher_figures(teacher: nn.Module, from_previous: bool, ctx: StageContext) -> dict:
    """The teacher's report figures, so the report shows teacher and student side by side."""
    if from_previous and ctx.previous:
        row = ctx.previous[-1]
    else:  # a teacher from elsewhere is measured by the same code the runner uses for every stage
        row = measure(teacher, ctx.data, task=ctx.task).as_dict()
    latency = row.get("latency_ms") or {}
    return {
        "teacher_value": row.get("value"),
        "teacher_params": row.get("params"),
        "teacher_size_bytes": row.get("size_bytes"),
        "teacher_latency_p50_ms": round(latency["p50"], 4) if "p50" in latency else None,
    }


def check_distill(model: nn.Module, config: DistillStageConfig, data: TaskData) -> nn.Module:
    """Teacher, student and hint layers; the student is the model the next stage receives."""
    check_teacher(config.teacher, data, "distill.teacher")
    teacher = model
    if config.teacher is not None and (config.student.shrink is not None or config.hints):  # their layers are needed
        teacher = resolve_teacher(config.teacher, data, "distill.teacher")
    if config.student.model is not None:
        student = build_model(config.student.model, data, where="distill.student.model")
    else:
        sizes = config.student.shrink
        student = shrink(teacher, sizes.width, sizes.depth, data.example_input(2))
    for index, hint in enumerate(config.hints):
        find_layer(teacher, hint.teacher, f"distill.hints[{index}].teacher", "teacher")
        find_layer(student, hint.student, f"distill.hints[{index}].student", "student")
    return student


@register_stage(
    "distill",
    DistillStageConfig,
    "train a smaller student to imitate the current model",
    check=check_distill,
)
def distill_stage(model: nn.Module, config: DistillStageConfig, ctx: StageContext) -> StageOutput:
    teacher = resolve_teacher(config.teacher, ctx.data, "teacher") if config.teacher else model
    if config.student.model is not None:
        student = build_model(config.student.model, ctx.data, where="student.model")
    else:
        sizes = config.student.shrink
        student = shrink(teacher, sizes.width, sizes.depth, ctx.data.example_input(2))
    result = distill_with_result(teacher, student, ctx.data, config, finetune=ctx.finetuner)
    info = {"epochs": result.epochs_run, **_teacher_figures(teacher, config.teacher is None, ctx)}
    if ctx.data.task == "classification":
        info["teacher_agreement"] = round(top1_agreement(result.model, teacher, ctx.data.test), 4)
    return StageOutput(result.model, info=info, history=result.history)
