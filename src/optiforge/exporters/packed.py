"""Export format ``packed``: the compressed file whose size the report shows."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from optiforge.exporters.base import register_exporter


@register_exporter("packed", ".ofpk")
def export_packed(model: nn.Module, path: Path, example_input: torch.Tensor | None = None) -> Path:
    """Sparse positions, shared-value indices and the other tensors, entropy-coded (``load_packed`` reads it)."""
    from optiforge.compress.packed import write_packed

    return write_packed(model, path)
