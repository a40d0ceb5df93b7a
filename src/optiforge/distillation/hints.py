"""Feature (hint) distillation: capture named layers' outputs, adapt widths.

Forward hooks record what each named layer returns during the ordinary
forward pass, so neither model's code changes. When the student's feature
shape differs from the teacher's, a linear adapter (a 1×1 convolution for
channel-first features) maps one to the other.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from optiforge.errors import ConfigError
from optiforge.registry import closest


def find_layer(model: nn.Module, name: str, field: str, role: str) -> nn.Module:
    """The module called ``name`` in ``model``, or a ConfigError naming ``field``."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        shown = [key for key in modules if key][:40]
        raise ConfigError(
            f"{field}: no layer '{name}' in the {role}{closest(name, shown)}; "
            f"layers: {', '.join(shown)}{' …' if len(modules) > 41 else ''}"
        )
    return modules[name]


def first_tensor(value: Any) -> torch.Tensor:
    """A layer's output as one tensor (Hugging Face layers return tuples)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return first_tensor(value[0])
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    raise TypeError(f"cannot read a tensor from a {type(value).__name__}")


class FeatureRecorder:
    """Keeps the latest output of each watched layer while hooks are attached."""

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in layers.items()]

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            self.features[name] = first_tensor(output)

        return record

    def clear(self) -> None:
        self.features.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.features.clear()


class HintAdapter(nn.Module):
    """A linear map along one axis of the student's features (flattened first if needed).

    ``axis`` is the axis whose size differs (1 for channel-first conv features,
    -1 for token features); ``flatten`` when more than one axis differs.
    """

    def __init__(self, in_features: int, out_features: int, axis: int, flatten: bool, out_shape: tuple) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.axis = axis
        self.flatten = flatten
        self.out_shape = out_shape  # teacher feature shape without the batch

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            return self.linear(features.flatten(1)).view(features.shape[0], *self.out_shape)
        moved = features.movedim(self.axis, -1)
        return self.linear(moved).movedim(-1, self.axis)


def make_adapter(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """Identity when shapes agree, else a :class:`HintAdapter` (shapes include the batch)."""
    if student_shape == teacher_shape:
        return nn.Identity()
    differing = [
        axis
        for axis in range(1, max(len(student_shape), len(teacher_shape)))
        if len(student_shape) != len(teacher_shape) or student_shape[axis] != teacher_shape[axis]
    ]
    if len(student_shape) == len(teacher_shape) and len(differing) == 1:
        axis = differing[0]
        return HintAdapter(student_shape[axis], teacher_shape[axis], axis, False, tuple(teacher_shape[1:]))
    return HintAdapter(math.prod(student_shape[1:]), math.prod(teacher_shape[1:]), -1, True, tuple(teacher_shape[1:]))
