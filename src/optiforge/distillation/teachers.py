"""Where a teacher comes from: a module, a model spec with a checkpoint, or a factory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.config import ModelConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError, ModelError
from optiforge.models.builtin import build_model

TeacherSource = nn.Module | ModelConfig | dict | str | Path | Callable[[], nn.Module]


def resolve_teacher(source: TeacherSource, data: TaskData, field: str = "teacher") -> nn.Module:
    """Turn any teacher source into a module.

    - an ``nn.Module``: used as is;
    - a ``ModelConfig`` or mapping (``{name: cnn1d, channels: [...], checkpoint: path}``):
      built for ``data`` and loaded from its checkpoint;
    - ``"package.module:function"``: a factory called like a model builder;
    - a path to a TorchScript (``.pt``/``.ts``) or ``torch.export`` (``.pt2``) file;
    - a callable with no arguments returning a module.
    """
    if isinstance(source, nn.Module):
        return source
    if isinstance(source, dict):
        source = ModelConfig(**source)
    if isinstance(source, ModelConfig):
        return build_model(source, data, where=field)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_file():
            return _load_file(path, field)
        if isinstance(source, str) and ":" in source:
            return build_model(ModelConfig(name=None, factory=source), data, where=field)
        raise ConfigError(f"{field}: no file '{source}' and not a 'package.module:function' factory")
    if callable(source):
        model = source()
        if not isinstance(model, nn.Module):
            raise ModelError(f"{field}: the factory returned {type(model).__name__}, not an nn.Module")
        return model
    raise ConfigError(f"{field}: expected a module, a model spec, a factory or a file, got {type(source).__name__}")


def _load_file(path: Path, field: str) -> nn.Module:
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception:  # a state dict is not a model: say how to give its architecture
        raise ConfigError(
            f"{field}: '{path}' is not a TorchScript or torch.export file; for a state dict give the "
            f"architecture too, e.g. {{name: cnn1d, channels: [64, 128, 128], checkpoint: '{path}'}}"
        ) from None


def describe_source(source: Any) -> str:
    if isinstance(source, nn.Module):
        return type(source).__name__
    if isinstance(source, ModelConfig):
        return source.factory or source.name or "model"
    return str(source)
