"""The small interface the training loop uses to run on one or many processes.

The loop asks a strategy to wrap the model, to give each process its share of
the data, to sum metric totals across processes and, when it accumulates
gradients, whether a backward pass must exchange them; it never asks which
strategy is running. Strategies whose model state is spread over processes
(sharded or split models) also say how a checkpoint stores that state, and a
pipeline strategy runs forward and backward itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler


class Strategy:
    """One process, no wrapping: the base every strategy refines."""

    name = "none"
    rank = 0
    world_size = 1
    # True when forward_backward runs the step (a pipeline schedule interleaves
    # forward and backward over microbatches, so the loop cannot call them apart).
    runs_own_step = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def restarted(self) -> bool:
        """True after the launcher restarted the workers: the run must resume, not start over."""
        return False

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the loop calls forward on (e.g. a DDP wrapper).

        Called before the optimizer is built, so a strategy may replace the
        model's parameters (sharding does).
        """
        return model

    def synchronizing(self, model: nn.Module, synchronize: bool) -> contextlib.AbstractContextManager:
        """The context for one forward and backward of ``model`` (the module :meth:`wrap` returned).

        With gradient accumulation only an optimizer step's last backward has ``synchronize`` true; a
        strategy that averages gradients over processes may skip that communication on the others, as
        their gradients are summed locally first.
        """
        return contextlib.nullcontext()

    def unwrap(self, model: nn.Module) -> nn.Module:
        """A plain module with the full weights; called on every process (it may gather)."""
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

    def forward_backward(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        loss_divisor: float = 1.0,
    ) -> torch.Tensor:
        """Run one step's forward and backward; return the (undivided) loss on every process.

        Only called when ``runs_own_step`` is true.
        """
        raise NotImplementedError(f"strategy '{self.name}' lets the loop run forward and backward")

    def checkpoint_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, tag: int
    ) -> tuple[Any, Any]:
        """(model state, optimizer state) for the checkpoint file that the main process writes.

        Called on every process, so it may gather or write shards of its own.
        """
        return self.unwrap(model).state_dict(), optimizer.state_dict()

    def load_checkpoint_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        model_state: Any,
        optimizer_state: Any,
        folder: Path,
    ) -> None:
        """Restore what :meth:`checkpoint_state` returned (read back from the checkpoint file)."""
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)


class SingleProcess(Strategy):
    """The default: everything in this process."""
