"""Distillation as a callback on the one training loop.

``transform_batch`` mixes the inputs once; the loop runs the student on the
mixed batch; ``compute_loss`` runs the teacher (eval mode, no gradients) on
the very same tensor and adds the distillation and hint terms to the task
loss. No second training loop exists.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optiforge.distillation.cache import TeacherCache
from optiforge.distillation.config import DistillConfig
from optiforge.distillation.hints import FeatureRecorder, find_layer
from optiforge.distillation.losses import embedding_loss, output_loss
from optiforge.distillation.mixing import mix_batch
from optiforge.distillation.outputs import output_tensor
from optiforge.training.callbacks import Callback, TrainState


class DistillationStudent(nn.Module):
    """The student plus the hint adapters trained with it.

    The loop builds its optimizer from the module it trains, so the adapters
    live here beside the student; ``forward`` is the student's alone (its
    logits, when the student returns a ``ModelOutput``, a dict or a tuple)
    and the wrapper is dropped after training.
    """

    def __init__(self, student: nn.Module, adapters: nn.ModuleList) -> None:
        super().__init__()
        self.student = student
        self.adapters = adapters

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        return output_tensor(self.student(*inputs, **kwargs), "student")


class DistillationCallback(Callback):
    """Adds ``alpha · distillation term + Σ hint losses`` to the task loss."""

    def __init__(
        self,
        teacher: nn.Module,
        student: DistillationStudent,
        config: DistillConfig,
        num_classes: int,
        train_dataset: torch.utils.data.Dataset | None = None,
    ) -> None:
        self.teacher = teacher
        self.student = student
        self.config = config
        self.num_classes = num_classes
        self.train_dataset = train_dataset
        self._cache: TeacherCache | None = None
        self._teacher_was_training = teacher.training
        self._student_recorder: FeatureRecorder | None = None
        self._teacher_recorder: FeatureRecorder | None = None
        self._sums: dict[str, float] = {}
        self._batches = 0

    def on_train_start(self, state: TrainState) -> None:
        self._teacher_was_training = self.teacher.training
        self.teacher.to(state.device).eval()
        hints = self.config.hints
        if hints:
            self._student_recorder = FeatureRecorder(
                {
                    hint.student: find_layer(self.student.student, hint.student, f"hints[{i}].student", "student")
                    for i, hint in enumerate(hints)
                }
            )
            self._teacher_recorder = FeatureRecorder(
                {
                    hint.teacher: find_layer(self.teacher, hint.teacher, f"hints[{i}].teacher", "teacher")
                    for i, hint in enumerate(hints)
                }
            )
        if self.config.cache_teacher and self.train_dataset is not None and self._cache is None:
            self._cache = TeacherCache(self.teacher, self.train_dataset, state.device)

    def on_epoch_start(self, state: TrainState) -> None:
        self._sums, self._batches = {}, 0

    def transform_batch(self, state: TrainState, inputs: Any, targets: Any) -> tuple[Any, Any]:
        if not isinstance(inputs, torch.Tensor):
            return inputs, targets
        return mix_batch(inputs, targets, self.config.mixing, self.num_classes)

    def _teacher_outputs(self, inputs: Any) -> torch.Tensor:
        if self._cache is not None:
            cached = self._cache.lookup(inputs)
            if cached is not None:
                return cached
        with torch.no_grad():
            return output_tensor(self.teacher(inputs), "teacher")

    def compute_loss(
        self, state: TrainState, inputs: Any, targets: Any, outputs: Any, loss: torch.Tensor
    ) -> torch.Tensor:
        config, alpha = self.config, self.config.loss.alpha
        self._batches += 1
        if alpha == 0 and not config.hints:
            return loss  # nothing to learn from the teacher: spare its forward pass
        teacher_outputs = self._teacher_outputs(inputs)
        # at alpha = 1 the task loss is left out entirely (not multiplied by 0: 0 · inf is NaN)
        total = (1 - alpha) * loss if alpha < 1 else None
        if alpha > 0:
            term = output_loss(outputs, teacher_outputs.detach(), config.loss.kind, config.loss.temperature)
            self._add("distill_loss", term)
            total = alpha * term if total is None else total + alpha * term
        for index, hint in enumerate(config.hints):
            student_features = self._student_recorder.features[hint.student]
            teacher_features = self._teacher_recorder.features[hint.teacher].detach()
            adapted = self.student.adapters[index](student_features)
            term = embedding_loss(adapted, teacher_features, hint.loss)
            self._add(f"hint_loss_{index}", term)
            total = total + hint.weight * term
        return total

    def _add(self, key: str, value: torch.Tensor) -> None:
        # .item() here would add a host sync per batch; keep the detached tensor and read it once per epoch
        self._sums[key] = self._sums.get(key, 0.0) + value.detach()

    def on_epoch_end(self, state: TrainState) -> None:
        if state.history and self._batches:
            for key, value in self._sums.items():
                state.history[-1][f"train_{key}"] = float(value) / self._batches

    def on_train_end(self, state: TrainState) -> None:
        for recorder in (self._student_recorder, self._teacher_recorder):
            if recorder is not None:
                recorder.remove()
        self._student_recorder = self._teacher_recorder = None
        self._cache = None
        self.teacher.train(self._teacher_was_training)
