"""Fidelity metrics: mean cosine and top-k neighbour overlap."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optiforge.encoders import fidelity, neighbour_overlap
from optiforge.encoders.fidelity import EmbeddingTask
from optiforge.tasks import task_for


def _embeddings(count: int = 40, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(count, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_identical_embeddings_are_perfectly_faithful():
    reference = _embeddings()
    scores = fidelity(reference.clone(), reference)
    assert scores["cosine"] == pytest.approx(1.0)
    assert scores["neighbours_kept"] == 1.0


def test_unrelated_embeddings_lose_neighbours():
    reference = _embeddings()
    scores = fidelity(_embeddings(seed=1), reference)
    assert scores["cosine"] < 0.5
    assert scores["neighbours_kept"] < 0.5


def test_small_noise_keeps_most_neighbours_but_not_all():
    reference = _embeddings(count=200)
    noisy = F.normalize(reference + 0.05 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(2)))
    overlap = neighbour_overlap(noisy, reference, k=10)
    assert 0.5 < overlap < 1.0


def test_overlap_counts_each_row_out_of_k():
    # two pairs: rows 0/1 point one way, rows 2/3 another; each row's nearest is its partner
    reference = torch.eye(4)[[0, 0, 1, 1]] + torch.tensor([[0.0], [0.01], [0.0], [0.01]])
    swapped = reference.clone()
    swapped[2] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # row 2 moves to the first pair: its neighbour changes
    assert neighbour_overlap(reference, reference, k=1) == 1.0
    assert neighbour_overlap(swapped, reference, k=1) < 1.0


def test_embedding_task_is_registered_and_evaluates_the_whole_set():
    task = task_for("embedding")
    assert isinstance(task, EmbeddingTask) and task.higher_is_better and task.primary_metric == "cosine"
    reference = _embeddings(count=64)
    dataset = torch.utils.data.TensorDataset(reference, reference)
    metrics = task.evaluate(
        torch.nn.Identity(), torch.utils.data.DataLoader(dataset, batch_size=16), torch.device("cpu")
    )
    assert metrics["cosine"] == pytest.approx(1.0) and metrics["neighbours_kept"] == 1.0
    assert task.loss(reference, reference).item() == pytest.approx(0.0, abs=1e-6)
    assert task.loss(_embeddings(count=64, seed=3), reference).item() > 0.5
