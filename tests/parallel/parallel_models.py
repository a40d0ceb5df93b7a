"""Model factories for the parallel tests: one that dies mid-epoch, and models a strategy cannot take."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from torch import nn

from optiforge.models.builtin import mlp


def dying_mlp(input_shape, num_classes, hidden=(32,), die_at_step: int = 30, marker: str = "") -> nn.Module:
    model = mlp(input_shape, num_classes, hidden=list(hidden))
    steps = {"count": 0}

    def count_training_steps(module, inputs):
        if not module.training:
            return
        steps["count"] += 1
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if steps["count"] == die_at_step and os.environ.get("RANK") == "1" and first_attempt:
            Path(marker).write_text(f"killed at step {die_at_step}\n")
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception: as if the machine lost it

    model.register_forward_pre_hook(count_training_steps)
    return model


def linear_only(input_shape, num_classes, hidden=()) -> nn.Module:
    """One Linear layer: nothing for tensor parallelism to pair."""
    import math

    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


class Residual(nn.Module):
    """Not an nn.Sequential: a pipeline cannot cut it between top-level modules."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.flatten, self.body, self.head = nn.Flatten(), nn.Linear(width, width), nn.Linear(width, num_classes)

    def forward(self, inputs):
        hidden = self.flatten(inputs)
        return self.head(hidden + self.body(hidden))


def residual(input_shape, num_classes, hidden=()) -> nn.Module:
    import math

    return Residual(math.prod(input_shape), num_classes)


class SelfAttention(nn.Module):
    """Multi-head self-attention that reads its head count from the projection width (tensor-parallel ready)."""

    def __init__(self, width: int = 16, head_width: int = 4) -> None:
        super().__init__()
        self.head_width = head_width
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(width, width) for _ in range(3))
        self.out_proj = nn.Linear(width, width)

    def forward(self, tokens):  # (batch, time, width)
        batch, time, _ = tokens.shape

        def heads(projected):  # (batch, heads, time, head_width); heads = local width / head_width
            return projected.view(batch, time, -1, self.head_width).transpose(1, 2)

        import torch.nn.functional as F

        mixed = F.scaled_dot_product_attention(
            heads(self.q_proj(tokens)), heads(self.k_proj(tokens)), heads(self.v_proj(tokens))
        )
        return self.out_proj(mixed.transpose(1, 2).reshape(batch, time, -1))
