"""``train.optimizer.weight_average``: an exponential moving average of the weights.

After every optimizer step the average moves towards the current weights by
``1 - decay``; floating-point buffers (BatchNorm's running statistics) are
averaged the same way, integer ones copied. Validation, ``stop_at``, early
stopping and the plateau schedule see the averaged model, and training returns
it: the average smooths the step-to-step noise of the weights, so it usually
scores higher than the last weights and reaches a target epochs earlier.

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates,
so an average started from the random initial weights forgets them within a
few steps instead of ``1 / (1 - decay)`` of them.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """A copy of ``model`` whose weights follow the model's as an exponential moving average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model)
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.updates = 0
        self._pair_tensors(model)

    def _pair_tensors(self, model: nn.Module) -> None:
        averaged, current = self.model.state_dict(keep_vars=True), model.state_dict(keep_vars=True)
        floating = [key for key, value in averaged.items() if value.is_floating_point()]
        self._averaged = [averaged[key].data for key in floating]
        self._current = [current[key].data for key in floating]
        self._copied = [(averaged[key].data, current[key].data) for key in averaged if key not in set(floating)]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's weights (call after each optimizer step)."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self._averaged, self._current, weight)
        for averaged, current in self._copied:
            averaged.copy_(current)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
