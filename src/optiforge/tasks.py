"""Tasks: the loss a model is trained with and the metrics it is judged by."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from optiforge.errors import ConfigError, DataError
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


class CausalLanguageModeling(Task):
    """Next-token prediction: the logits at position t are scored against the token at t + 1.

    Outputs are logits (batch, positions, vocabulary); targets are the token ids
    (batch, positions), usually the inputs themselves, with -100 where no token is
    predicted (padding). Metrics: ``loss`` (mean cross-entropy per predicted token),
    ``perplexity`` (its exponential) and ``token_accuracy``.

    >>> task = CausalLanguageModeling()
    >>> tokens = torch.tensor([[1, 2, 0]])
    >>> logits = F.one_hot(torch.tensor([[2, 0, 1]]), 3).float() * 10  # predicts 2, then 0
    >>> task.finalize(task.batch_sums(logits, tokens))["token_accuracy"]
    1.0
    """

    primary_metric = "token_accuracy"
    higher_is_better = True
    ignore_index = -100

    def _shifted(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if outputs.dim() != 3 or targets.shape != outputs.shape[:2]:
            raise DataError(
                f"causal_lm: expects logits (batch, positions, vocabulary) and token ids (batch, positions) as "
                f"targets; got outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)}"
            )
        # (B, T-1, V) logits against the (B, T-1) tokens that follow them
        return outputs[:, :-1].flatten(0, 1), targets[:, 1:].flatten().long()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits, tokens = self._shifted(outputs, targets)
        return F.cross_entropy(logits, tokens, ignore_index=self.ignore_index)

    def training_loss(self, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if not label_smoothing:
            return self.loss

        def smoothed(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            logits, tokens = self._shifted(outputs, targets)
            return F.cross_entropy(logits, tokens, ignore_index=self.ignore_index, label_smoothing=label_smoothing)

        return smoothed

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        logits, tokens = self._shifted(outputs, targets)
        predicted = tokens != self.ignore_index
        return {
            "loss": F.cross_entropy(logits, tokens, ignore_index=self.ignore_index, reduction="sum").item(),
            "correct": ((logits.argmax(dim=1) == tokens) & predicted).sum().item(),
            "count": float(predicted.sum()),
        }

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss"] / sums["count"]
        accuracy = sums["correct"] / sums["count"]
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "token_accuracy": accuracy}


TASKS: Registry[type[Task]] = Registry("task")
TASKS.add("classification", Classification)
TASKS.add("logit_fidelity", LogitFidelity)
TASKS.add("causal_lm", CausalLanguageModeling)

# tasks a model decides whatever the data's task: a causal language model is judged on its next tokens
_MODEL_TASKS = ("causal_lm",)


def task_for(name: str, model: Any = None) -> Task:
    """The task named ``name`` (the data's), or the one ``model`` declares in its ``task`` attribute.

    A model declaring ``task = "causal_lm"`` (a Hugging Face model loaded with ``task: causal_lm``)
    returns next-token logits, so it is trained and measured as a causal language model.
    """
    declared = getattr(model, "task", None)
    if declared in _MODEL_TASKS:
        return TASKS.get(declared, field="model.task")()
    return TASKS.get(name, field="data.task")()
