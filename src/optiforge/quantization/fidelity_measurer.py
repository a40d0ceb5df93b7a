"""The measurer of quantize's searches: each candidate's fidelity to the float model, measured as it was built.

``value`` is the accuracy on labelled batches, else the output cosine (the float model: its accuracy, or 1.0);
a candidate is accepted when it met the quantize target (or ``engine: auto``'s default cosine floor).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from optiforge.quantization.calibration import call
from optiforge.quantization.fidelity import Fidelity, labels_of
from optiforge.search import SearchConfig
from optiforge.search.figures import BaseMeasurer


class Measured(Protocol):
    """What a candidate's build measured (an engine's attempt, a number of layers kept float)."""

    fidelity: Fidelity | None
    target_met: bool


def float_accuracy(evaluation: list, reference: list[torch.Tensor]) -> float | None:
    """The float model's accuracy on labelled ``evaluation`` batches, from its outputs ``reference``."""
    correct = total = 0
    for batch, outputs in zip(evaluation, reference, strict=True):
        labels = labels_of(batch)
        if labels is not None and outputs.shape[1] > 1:
            correct += int((outputs.argmax(1) == labels).sum())
            total += labels.numel()
    return correct / total if total else None


class FidelityMeasurer(BaseMeasurer):
    """Figures of each candidate (by name in ``measured``): the fidelity its build measured, and its speed at
    ``batch`` when it may ship (the others can never be chosen, so they are not timed)."""

    def __init__(
        self,
        baseline: nn.Module,
        config: SearchConfig,
        batch: Any,
        measured: Mapping[str, Measured],
        accuracy: float | None,
    ) -> None:
        super().__init__(baseline, config, [batch], higher_is_better=True)
        self.measured, self.float_accuracy = measured, accuracy

    def run(self, model: Any, batch: Any) -> Callable[[], Any]:
        return functools.partial(call, model, batch)

    def fidelity_figures(self, model: Any, name: str) -> dict:
        """``metric``, ``value`` and ``fidelity`` (and, for a candidate, ``target_met`` and ``agreement``)."""
        labelled = self.float_accuracy is not None
        metric = "accuracy" if labelled else "output cosine"
        if model is self.baseline:
            return {"metric": metric, "value": self.float_accuracy if labelled else 1.0, "fidelity": 1.0}
        tried = self.measured[name]
        figures: dict[str, Any] = {"metric": metric, "target_met": tried.target_met}
        if tried.fidelity is not None:
            fidelity = tried.fidelity
            value = fidelity.accuracy if labelled and fidelity.accuracy is not None else fidelity.cosine
            figures |= {"value": value, "fidelity": fidelity.cosine, "agreement": fidelity.agreement}
        return figures

    def figures(self, model: Any, artifact: Path | None, name: str) -> dict:
        figures = self.fidelity_figures(model, name)
        if model is self.baseline:
            return figures
        figures["throughput_per_s"] = None
        if figures["target_met"]:
            figures |= self.speed_figures(model)
        return figures

    def accepted(self, figures: dict) -> bool:
        """The build's own verdict: it met the quantize target (or the default cosine floor)."""
        return bool(figures.get("target_met"))
