"""How close a quantized model stays to its float original.

For any model: mean cosine between outputs and their relative error. For a
classifier (batches with integer labels): accuracy of both, the drop, and
how often the two agree on the predicted class.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from optiforge.quantization.calibration import call, model_inputs


@dataclass
class Fidelity:
    cosine: float
    relative_error: float
    accuracy: float | None = None
    float_accuracy: float | None = None
    agreement: float | None = None

    @property
    def metric_drop(self) -> float | None:
        if self.accuracy is None or self.float_accuracy is None:
            return None
        return self.float_accuracy - self.accuracy

    def meets(self, max_metric_drop: float | None, min_fidelity: float | None) -> bool:
        if max_metric_drop is not None and self.metric_drop is not None and self.metric_drop > max_metric_drop + 1e-9:
            return False
        return not (min_fidelity is not None and self.cosine < min_fidelity)

    def error(self) -> tuple[float, float]:
        """What ranks layers and attempts: metric drop first (when known), then 1 - cosine."""
        return (self.metric_drop or 0.0, 1.0 - self.cosine)

    def as_dict(self) -> dict:
        return {**asdict(self), "metric_drop": self.metric_drop}


def labels_of(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, (tuple, list)) and len(batch) > 1 and torch.is_tensor(batch[1]):
        labels = batch[1]
        if not labels.is_floating_point() and labels.dim() == 1:
            return labels
    return None


def _flat(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    outputs = torch.as_tensor(outputs).float()
    return outputs.reshape(outputs.shape[0], -1)


@torch.no_grad()
def float_outputs(model: torch.nn.Module, batches: Iterable) -> list[torch.Tensor]:
    """The float model's outputs on each batch, computed once and reused."""
    model.eval()
    return [_flat(call(model, model_inputs(batch))) for batch in batches]


@torch.no_grad()
def compare(candidate: Any, batches: list, reference: list[torch.Tensor]) -> Fidelity:
    """Compare ``candidate`` on ``batches`` with the float outputs ``reference``."""
    if isinstance(candidate, torch.nn.Module):
        candidate.eval()
    cosine_sum = error_sum = count = 0.0
    correct = float_correct = agree = labelled = 0
    for batch, expected in zip(batches, reference, strict=True):
        actual = _flat(call(candidate, model_inputs(batch)))
        cosine_sum += F.cosine_similarity(actual, expected, dim=1, eps=1e-12).sum().item()
        error_sum += ((actual - expected).norm(dim=1) / expected.norm(dim=1).clamp_min(1e-12)).sum().item()
        count += actual.shape[0]
        labels = labels_of(batch)
        if labels is not None and expected.shape[1] > 1:
            predicted, float_predicted = actual.argmax(1), expected.argmax(1)
            correct += (predicted == labels).sum().item()
            float_correct += (float_predicted == labels).sum().item()
            agree += (predicted == float_predicted).sum().item()
            labelled += labels.numel()
    result = Fidelity(cosine=cosine_sum / max(count, 1), relative_error=error_sum / max(count, 1))
    if labelled:
        result.accuracy = correct / labelled
        result.float_accuracy = float_correct / labelled
        result.agreement = agree / labelled
    return result
