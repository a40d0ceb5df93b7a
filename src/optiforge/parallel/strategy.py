"""The small interface the training loop uses to run on one or many processes.

The loop asks a strategy to wrap the model, to give each process its share of
the data and to sum metric totals across processes; it never asks which
strategy is running.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler


class Strategy:
    """One process, no wrapping: the base every strategy refines."""

    name = "none"
    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the loop calls forward on (e.g. a DDP wrapper)."""
        return model

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    def train_sampler(self, dataset: Dataset, seed: int) -> Sampler | None:
        """``None`` lets the loop shuffle the whole dataset itself."""
        return None

    def eval_sampler(self, dataset: Dataset) -> Sampler | None:
        return None

    def per_process_batch(self, batch_size: int) -> int:
        """Recipes give the global batch size; each process takes its share."""
        return batch_size

    def reduce_sums(self, sums: dict[str, float]) -> dict[str, float]:
        return sums

    def barrier(self) -> None: ...


class SingleProcess(Strategy):
    """The default: everything in this process."""
