"""Named hook points of the training loop.

A technique that needs to act during training (distillation adds a loss
term, pruning re-applies masks, weight sharing ties gradients) subclasses
:class:`Callback` and overrides only the hooks it needs. What a callback
changes over time is returned by ``state_dict`` so checkpoints capture it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TrainState:
    """What the loop exposes to callbacks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    step: int = 0  # optimizer steps taken so far
    history: list[dict[str, float]] = field(default_factory=list)
    stop: bool = False  # set by a callback to end training after this epoch


class Callback:
    """Override the hooks you need; each defaults to doing nothing."""

    def on_train_start(self, state: TrainState) -> None: ...

    def on_epoch_start(self, state: TrainState) -> None: ...

    def transform_batch(self, state: TrainState, inputs: Any, targets: Any) -> tuple[Any, Any]:
        """Change a batch before the forward pass (e.g. input mixing)."""
        return inputs, targets

    def compute_loss(
        self, state: TrainState, inputs: Any, targets: Any, outputs: Any, loss: torch.Tensor
    ) -> torch.Tensor:
        """Return the loss to optimise; ``loss`` is the task loss."""
        return loss

    def before_backward(self, state: TrainState) -> None: ...

    def after_backward(self, state: TrainState) -> None: ...

    def before_optimizer_step(self, state: TrainState) -> None: ...

    def after_optimizer_step(self, state: TrainState) -> None: ...

    def on_eval(self, state: TrainState, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...
