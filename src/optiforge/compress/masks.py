"""Unstructured magnitude masks and the callback that enforces them during training."""

from __future__ import annotations

import torch
from torch import nn

from optiforge.compress.config import GradualConfig
from optiforge.compress.schedule import cubic_sparsity, update_steps
from optiforge.training.callbacks import Callback, TrainState


def magnitude_masks(
    weights: dict[str, torch.Tensor],
    groups: list[tuple[list[str], float]],
    previous: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Boolean keep-masks: within each group of names, the smallest |w| are pruned.

    A group ranks its layers together (global pruning) or holds one layer
    (per-layer pruning). Weights pruned by ``previous`` masks stay pruned,
    so masks only ever grow sparser, as the gradual schedule assumes.
    """
    masks: dict[str, torch.Tensor] = {}
    for names, sparsity in groups:
        scores = []
        for name in names:
            score = weights[name].detach().abs().float().flatten()
            if previous is not None and name in previous:
                score = torch.where(previous[name].flatten(), score, torch.full_like(score, -1.0))
            scores.append(score)
        joined = torch.cat(scores)
        pruned_count = int(round(sparsity * joined.numel()))
        keep = torch.ones_like(joined, dtype=torch.bool)
        if pruned_count > 0:
            # a stable sort makes ties (e.g. many equal zeros) break the same way every run
            order = torch.sort(joined, stable=True).indices
            keep[order[:pruned_count]] = False
        offset = 0
        for name in names:
            size = weights[name].numel()
            masks[name] = keep[offset : offset + size].view_as(weights[name])
            offset += size
    return masks


def sparsity_groups(
    names: list[str], sparsity: float, scope: str, layer_sparsity: dict[str, float]
) -> list[tuple[list[str], float]]:
    """Ranking groups: listed layers alone at their own value, the rest global or per layer."""
    groups = [([name], layer_sparsity[name]) for name in names if name in layer_sparsity]
    rest = [name for name in names if name not in layer_sparsity]
    if rest and scope == "global":
        groups.append((rest, sparsity))
    else:
        groups += [([name], sparsity) for name in rest]
    return groups


class MaskCallback(Callback):
    """Keeps pruned weights at zero during training, optionally pruning gradually.

    Gradients of pruned weights are zeroed before the optimizer step, so
    momentum and Adam moments never build up there; after the step the
    weights and every optimizer state of the same shape are masked again,
    so weight decay or a moment left from earlier cannot revive them.
    """

    def __init__(
        self,
        layers: dict[str, nn.Module | torch.Tensor],
        masks: dict[str, torch.Tensor],
        groups: list[tuple[list[str], float]] | None = None,
        gradual: GradualConfig | None = None,
    ) -> None:
        # a layer stands for its ``weight``; a tensor (an RNN or attention weight) for itself
        self.tensors = {name: item if isinstance(item, torch.Tensor) else item.weight for name, item in layers.items()}
        self.masks = masks
        self.groups = groups
        self.gradual = gradual
        self.total_steps = 0
        self.updates: set[int] = set()

    def on_train_start(self, state: TrainState) -> None:
        self.total_steps = state.epochs * state.steps_per_epoch
        if self.gradual is not None:
            self.updates = update_steps(self.total_steps, self.gradual)
        self.apply(state)

    def before_optimizer_step(self, state: TrainState) -> None:
        for name, weight in self.tensors.items():
            if weight.grad is not None:
                weight.grad.masked_fill_(~self.masks[name], 0.0)

    def after_optimizer_step(self, state: TrainState) -> None:
        if self.gradual is not None and self.groups is not None and state.step in self.updates:
            weights = dict(self.tensors)
            groups = [
                (names, cubic_sparsity(state.step, self.total_steps, goal, self.gradual)) for names, goal in self.groups
            ]
            self.masks = magnitude_masks(weights, groups, previous=self.masks)
        self.apply(state)

    def on_train_end(self, state: TrainState) -> None:
        if self.gradual is not None and self.groups is not None:
            # early stopping may restore weights from before the last mask update
            weights = dict(self.tensors)
            self.masks = magnitude_masks(weights, self.groups, previous=self.masks)
        self.apply(state)

    @torch.no_grad()
    def apply(self, state: TrainState | None) -> None:
        for name, weight in self.tensors.items():
            mask = self.masks[name].to(weight.device)
            self.masks[name] = mask
            weight.masked_fill_(~mask, 0.0)  # not mul_: -w * 0 would leave -0.0 behind
            if state is None:
                continue
            for value in state.optimizer.state.get(weight, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                    value.masked_fill_(~mask, 0)

    def state_dict(self) -> dict:
        return {"masks": {name: mask.cpu() for name, mask in self.masks.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.masks = {name: mask.bool() for name, mask in state["masks"].items()}
