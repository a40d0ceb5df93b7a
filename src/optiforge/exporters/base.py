"""The exporter registry. An exporter writes one file and returns its path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from optiforge.files import atomic_save
from optiforge.registry import Registry

Exporter = Callable[[nn.Module, Path, torch.Tensor], Path]
EXPORTERS: Registry[tuple[Exporter, str]] = Registry("export format")


def register_exporter(name: str, suffix: str) -> Callable[[Exporter], Exporter]:
    """Register ``fn(model, path, example_input) -> path`` under ``name``."""

    def add(function: Exporter) -> Exporter:
        EXPORTERS.add(name, (function, suffix))
        return function

    return add


@register_exporter("state_dict", ".pt")
def export_state_dict(model: nn.Module, path: Path, example_input: torch.Tensor) -> Path:
    """The float state dict (``torch.load(..., weights_only=True)`` reads it)."""
    return atomic_save(model.state_dict(), path)


def export(
    model: nn.Module, path: str | Path, format: str = "state_dict", example_input: torch.Tensor | None = None
) -> Path:
    """Write ``model`` in ``format``; ``example_input`` is needed by tracing formats."""
    function, _suffix = EXPORTERS.get(format, field="export")
    return function(model, Path(path), example_input)


class WritersByType(dict):
    """Model type → ``writer(model, path, example_input) -> path`` for one format; the most derived type wins."""

    def register(self, model_type: type) -> Callable[[Exporter], Exporter]:
        """Decorator registering a writer for models of ``model_type``."""

        def add(writer: Exporter) -> Exporter:
            self[model_type] = writer
            return writer

        return add

    def find(self, model: object) -> Exporter | None:
        """The writer registered for ``model``'s class or its nearest base, or ``None``."""
        return next((self[kind] for kind in type(model).__mro__ if kind in self), None)
