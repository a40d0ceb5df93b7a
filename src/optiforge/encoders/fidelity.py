"""Fidelity of an encoder to its float original, and the ``embedding`` task.

Two numbers judge a compressed sentence encoder: the mean cosine between its
embeddings and the float model's, and how many of each sentence's top-k
nearest neighbours (by cosine, among the evaluation sentences) it keeps —
the second is what a search index built on the embeddings would notice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from optiforge.tasks import TASKS, Task

TOP_K = 10
# sentence-transformers' default encode batch; int8 with dynamic activation ranges depends on
# what shares a batch (and on its padding), so fidelity is measured at the batch size users run
ENCODE_BATCH = 32


def mean_cosine(embeddings: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean cosine similarity of matching rows."""
    return float(F.cosine_similarity(embeddings.float(), reference.float(), dim=1, eps=1e-12).mean())


def nearest_neighbours(embeddings: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Indices ``(count, k)`` of each row's k most similar other rows (cosine)."""
    normalized = F.normalize(embeddings.float(), dim=1)
    similarity = normalized @ normalized.T  # (N, N)
    similarity.fill_diagonal_(-float("inf"))  # a sentence is not its own neighbour
    return similarity.topk(min(k, embeddings.shape[0] - 1), dim=1).indices


def neighbour_overlap(embeddings: torch.Tensor, reference: torch.Tensor, k: int = TOP_K) -> float:
    """Mean fraction of each row's top-k reference neighbours that ``embeddings`` keeps."""
    if embeddings.shape[0] < 2:
        return 1.0
    found, expected = nearest_neighbours(embeddings, k), nearest_neighbours(reference, k)
    # membership of each found index among the expected ones: (N, k, 1) == (N, 1, k)
    kept = (found.unsqueeze(2) == expected.unsqueeze(1)).any(dim=2).float()
    return float(kept.mean())


def fidelity(embeddings: torch.Tensor, reference: torch.Tensor, k: int = TOP_K) -> dict[str, float]:
    """``cosine``, ``neighbours_kept`` (top-k overlap) and ``mse`` against the reference."""
    return {
        "cosine": mean_cosine(embeddings, reference),
        "neighbours_kept": neighbour_overlap(embeddings, reference, k),
        "mse": float(F.mse_loss(embeddings.float(), reference.float())),
    }


class EmbeddingTask(Task):
    """Targets are the float model's embeddings; the metric is fidelity to them.

    ``evaluate`` encodes in batches of 32 whatever the loader's batch size
    (the packed inputs are trimmed to each batch's longest sentence), and
    computes neighbours over the whole evaluation set.

    The loss (for distillation-style repair after pruning) is ``1 - cosine``
    plus the mean squared error scaled to the embedding's dimension, so both
    direction and length are pulled back to the original.
    """

    primary_metric = "cosine"
    higher_is_better = True

    def timing_batches(self, data: Any, batch_size: int) -> list[torch.Tensor]:
        """Every test sentence, in batches of ``batch_size`` each trimmed to its longest sentence: lengths vary
        from batch to batch as they do in use, which is what padding-free execution is for."""
        from optiforge.encoders.batches import batches_from

        return batches_from(data.test, batch_size)[0]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cosine = F.cosine_similarity(outputs, targets, dim=1).mean()
        return (1.0 - cosine) + F.mse_loss(outputs, targets) * outputs.shape[1]

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        # neighbours need the whole evaluation set: this per-batch form is the fallback
        # for callers that only sum batches; ``evaluate`` gathers everything instead
        count = float(outputs.shape[0])
        return {
            "cosine": mean_cosine(outputs, targets) * count,
            "neighbours_kept": neighbour_overlap(outputs, targets) * count,
            "loss": float(self.loss(outputs.float(), targets.float())) * count,
            "count": count,
        }

    def finalize(self, sums: dict[str, float]) -> dict[str, float]:
        return {key: value / sums["count"] for key, value in sums.items() if key != "count"}

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        loader: DataLoader,
        device: torch.device,
        autocast: Callable | None = None,
        reduce: Callable[[dict], dict] | None = None,
    ) -> dict[str, float]:
        if reduce is not None:  # several processes: each sees a shard, so sum per batch
            return super().evaluate(model, loader, device, autocast, reduce)
        was_training = model.training
        model.eval()
        outputs, targets = [], []
        for loader_inputs, batch_targets in loader:
            for inputs in loader_inputs.to(device).split(ENCODE_BATCH):
                if autocast is not None:
                    with autocast():
                        batch_outputs = model(inputs)
                else:
                    batch_outputs = model(inputs)
                outputs.append(torch.as_tensor(batch_outputs).float().cpu())
            targets.append(batch_targets.float())
        model.train(was_training)
        if not outputs:
            return {}
        embeddings, reference = torch.cat(outputs), torch.cat(targets)
        metrics = fidelity(embeddings, reference)
        metrics["loss"] = float(self.loss(embeddings, reference))
        return metrics


TASKS.add("embedding", EmbeddingTask)
