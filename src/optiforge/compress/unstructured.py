"""Unstructured magnitude pruning: one-shot or gradual, global or per layer."""

from __future__ import annotations

from torch import nn

from optiforge.compress.common import Trainer, layer_values
from optiforge.compress.config import PruneConfig
from optiforge.compress.masks import MaskCallback, magnitude_masks, sparsity_groups


def prune_unstructured(model: nn.Module, config: PruneConfig, finetune: Trainer) -> tuple[nn.Module, list[str]]:
    """Zero the smallest weights; with fine-tuning, keep them zero while training. Returns (model, layers pruned)."""
    layers = config.layers.select(model)
    names = list(layers)
    layer_sparsity = layer_values(model, names, config.layer_sparsity, "layer_sparsity")
    groups = sparsity_groups(names, config.sparsity, config.scope, layer_sparsity)
    weights = {name: layer.weight for name, layer in layers.items()}

    if config.schedule is not None:
        start = [(group, config.schedule.initial_sparsity) for group, _ in groups]
        masks = magnitude_masks(weights, start)
        callback = MaskCallback(layers, masks, groups=groups, gradual=config.schedule)
    else:
        callback = MaskCallback(layers, magnitude_masks(weights, groups))
    callback.apply(None)
    model = finetune(model, [callback])
    return model, names
