"""Tasks: the loss a model is trained with and the metrics it is judged by."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from optiforge.errors import ConfigError
from optiforge.registry import Registry


class Task:
    """Loss, metric sums over batches, and the metric to select models by."""

    primary_metric = "loss"
    higher_is_better = False

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def timing_batches(self, data: Any, batch_size: int) -> list[torch.Tensor]:
        """The input batches a speed is measured on (``data``: a ``TaskData``): one batch of real test inputs."""
        return [data.example_input(batch_size)]

    def training_loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The loss training optimises: :meth:`loss`, with its labels smoothed where the task has labels."""
        if label_smoothing:
            raise ConfigError(
                f"data.label_smoothing: {label_smoothing} needs class labels; the task '{type(self).__name__}' "
                "has none; set it to 0"
            )
        return self.loss

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        loader: DataLoader,
        device: torch.device,
        autocast: Callable | None = None,
        reduce: Callable[[dict], dict] | None = None,
    ) -> dict[str, float]:
        """Metrics over a loader; ``reduce`` sums the per-batch sums across processes."""
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {}
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            if autocast is not None:
                with autocast():
                    outputs = model(inputs)
            else:
                outputs = model(inputs)
            for key, value in self.batch_sums(outputs.float(), targets).items():
                sums[key] = sums.get(key, 0.0) + value
        model.train(was_training)
        if reduce is not None:
            sums = reduce(sums)
        return self.finalize(sums) if sums.get("count") else {}


class Classification(Task):
    """Cross-entropy loss (hard or soft targets); accuracy as the metric."""

    primary_metric = "accuracy"
    higher_is_better = True

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets)

    def training_loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if not label_smoothing:
            return self.loss
        return lambda outputs, targets: F.cross_entropy(outputs, targets, label_smoothing=label_smoothing)

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        labels = targets.argmax(dim=1) if targets.dim() == 2 else targets
        return {
            "loss": F.cross_entropy(outputs, targets, reduction="sum").item(),
            "correct": (outputs.argmax(dim=1) == labels).sum().item(),
            "count": float(labels.numel()),
        }

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        return {"loss": sums["loss"] / sums["count"], "accuracy": sums["correct"] / sums["count"]}


class LogitFidelity(Task):
    """Targets are a float reference model's logits; the metric is agreement with them.

    ``agreement`` is the share of inputs whose top-1 class is the reference's,
    ``cosine`` the mean cosine between logit vectors. The loss (for repair
    fine-tuning) is the KL divergence from the reference's class distribution.

    >>> task = LogitFidelity()
    >>> reference = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    >>> task.finalize(task.batch_sums(reference, reference))["agreement"]
    1.0
    """

    primary_metric = "agreement"
    higher_is_better = True

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_expected = F.log_softmax(targets.float(), dim=1)
        return F.kl_div(F.log_softmax(outputs, dim=1), log_expected, log_target=True, reduction="batchmean")

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        count = float(outputs.shape[0])
        targets = targets.float()
        return {
            "agreement": (outputs.argmax(dim=1) == targets.argmax(dim=1)).sum().item(),
            "cosine": F.cosine_similarity(outputs, targets, dim=1, eps=1e-12).sum().item(),
            "loss": self.loss(outputs, targets).item() * count,
            "count": count,
        }

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        return {key: value / sums["count"] for key, value in sums.items() if key != "count"}


TASKS: Registry[type[Task]] = Registry("task")
TASKS.add("classification", Classification)
TASKS.add("logit_fidelity", LogitFidelity)


def task_for(name: str) -> Task:
    return TASKS.get(name, field="data.task")()
