"""What ``quantize_with_result`` returns: the quantized model and what was done to reach it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from optiforge.quantization.fidelity import Fidelity


@dataclass
class QuantizeResult:
    """The quantized model and what was done to reach it.

    ``engine`` is ``None`` and ``baseline_kept`` true when no candidate met
    the target: ``model`` is then the float model, unchanged. ``export_onnx``
    writes the model's ONNX graph (int8 where ONNX Runtime can run it).
    """

    model: nn.Module
    scheme: str
    engine: str | None
    reason: str
    float_layers: list[str]
    unsupported_layers: list[str]
    fidelity: Fidelity | None
    candidates: list[dict]
    baseline_kept: bool
    target_met: bool
    sensitivity: list[dict] = field(default_factory=list)
    search: list[dict] = field(default_factory=list)  # mixed precision: one row per number of float layers tried
    history: list[dict] = field(default_factory=list)  # qat_int8 training
    onnx_writer: Callable[[Path, Any], Path] | None = field(default=None, repr=False)

    def export_onnx(self, path: str | Path, example_input: Any) -> Path:
        """Write this model as ONNX at ``path`` (QDQ/integer ops for int8 schemes ONNX Runtime runs)."""
        if self.onnx_writer is not None:
            return self.onnx_writer(Path(path), example_input)
        from optiforge.exporters.onnx import export_onnx_format

        return export_onnx_format(self.model, Path(path), example_input)

    def summary(self) -> dict:
        return {
            "scheme": self.scheme,
            "engine": self.engine,
            "engine_reason": self.reason,
            "baseline_kept": self.baseline_kept,
            "target_met": self.target_met,
            "float_layers": self.float_layers,
            "unsupported_layers": self.unsupported_layers,
            "candidates": self.candidates,
            **({"fidelity": self.fidelity.as_dict()} if self.fidelity else {}),
        }
