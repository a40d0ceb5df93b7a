"""Where a teacher comes from: a module, a model spec with a checkpoint, or a factory."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.config import ModelConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError, ModelError
from optiforge.models.builtin import MODELS, build_model
from optiforge.models.weights import read_weights
from optiforge.registry import import_factory

TeacherSource = nn.Module | ModelConfig | dict | str | Path | Callable[[], nn.Module]


def resolve_teacher(
    source: TeacherSource, data: TaskData, field: str = "teacher", *, trusted: bool = False
) -> nn.Module:
    """Turn any teacher source into a module.

    - an ``nn.Module``: used as is;
    - a ``ModelConfig`` or mapping (``{name: cnn1d, channels: [...], checkpoint: path}``):
      built for ``data`` and loaded from its checkpoint (tensors only, read with ``weights_only=True``);
    - ``"package.module:function"``: a factory called like a model builder;
    - a path to a TorchScript (``.pt``/``.ts``) or ``torch.export`` (``.pt2``) file, only with
      ``trusted=True``: such a file is a program, and loading it runs code from the file;
      use it only for files you made;
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
            return _load_file(path, field, trusted)
        if isinstance(source, str) and ":" in source:
            return build_model(ModelConfig(name=None, factory=source), data, where=field)
        raise ConfigError(f"{field}: no file '{source}' and not a 'package.module:function' factory")
    if callable(source):
        model = source()
        if not isinstance(model, nn.Module):
            raise ModelError(f"{field}: the factory returned {type(model).__name__}, not an nn.Module")
        return model
    raise ConfigError(f"{field}: expected a module, a model spec, a factory or a file, got {type(source).__name__}")


def check_teacher(source: TeacherSource | None, data: TaskData, field: str = "teacher") -> None:
    """Check a teacher before any training: its spec, its checkpoint file and that the file fits the model.

    A model spec is built and its checkpoint loaded (as the distill stage will do), so a missing,
    truncated or foreign file, a file holding code, or a checkpoint of another architecture raises
    its ``OptiforgeError`` now instead of after the stages before distillation. A factory is
    imported but not called; modules and callables are not checked.
    """
    if source is None or isinstance(source, nn.Module):
        return
    if isinstance(source, dict):
        source = ModelConfig(**source)
    if isinstance(source, ModelConfig):
        if source.checkpoint:
            build_model(source, data, where=field)
        elif source.factory:
            import_factory(source.factory, f"{field}.factory")
        else:
            MODELS.get(source.name or "", field=f"{field}.name")
        return
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_file():
            _refuse_program(path, field)
            _refuse_state_dict(path, field)
        elif isinstance(source, str) and ":" in source:
            import_factory(source, field)
        else:
            raise ConfigError(f"{field}: no file '{source}' and not a 'package.module:function' factory")


def _is_program(path: Path) -> bool:
    """A TorchScript archive (it holds a ``code/`` folder) or a ``torch.export`` file."""
    if path.suffix == ".pt2":
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def _refuse_program(path: Path, field: str) -> None:
    if _is_program(path):
        raise ModelError(
            f"{field}: '{path}' is a TorchScript or torch.export program; loading it runs code from the file, "
            "so it is refused. Give the architecture and a state dict instead, e.g. "
            f"{{name: cnn1d, channels: [64, 128, 128], checkpoint: weights.pt}}, or, only for files you made, "
            "resolve_teacher(path, data, trusted=True)"
        )


def _refuse_state_dict(path: Path, field: str) -> None:
    read_weights(path, field)  # a file with code or a broken file is refused here, before anything else
    raise ConfigError(
        f"{field}: '{path}' is not a TorchScript or torch.export file; for a state dict give the "
        f"architecture too, e.g. {{name: cnn1d, channels: [64, 128, 128], checkpoint: '{path}'}}"
    )


def _load_file(path: Path, field: str, trusted: bool) -> nn.Module:
    if not trusted:
        _refuse_program(path, field)
        _refuse_state_dict(path, field)
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
