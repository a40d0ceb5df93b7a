"""Unstructured magnitude pruning: one-shot or gradual, global or per layer."""

from __future__ import annotations

from torch import nn

from optiforge.compress.common import Finetune, read_layer_values
from optiforge.compress.config import PruneConfig
from optiforge.compress.masks import MaskCallback, magnitude_masks, sparsity_groups
from optiforge.compress.select import check_names, select_layers
from optiforge.errors import ConfigError


def prune_unstructured(model: nn.Module, config: PruneConfig, finetune: Finetune | None) -> nn.Module:
    """Zero the smallest weights; with fine-tuning, keep them zero while training."""
    layers = select_layers(model, config.layers)
    layer_sparsity = read_layer_values(config.layer_sparsity, "layer_sparsity")
    check_names(model, list(layer_sparsity), "layer_sparsity")
    unknown = [name for name in layer_sparsity if name not in layers]
    if unknown:
        raise ConfigError(
            f"layer_sparsity: '{unknown[0]}' is not a prunable layer left after the exclusions; "
            f"prunable: {', '.join(layers)}"
        )
    names = list(layers)
    groups = sparsity_groups(names, config.sparsity, config.scope, layer_sparsity)
    weights = {name: layer.weight for name, layer in layers.items()}

    if config.schedule == "gradual":
        start = [(group, config.gradual.initial_sparsity) for group, _ in groups]
        masks = magnitude_masks(weights, start)
        callback = MaskCallback(layers, masks, groups=groups, gradual=config.gradual)
    else:
        callback = MaskCallback(layers, magnitude_masks(weights, groups))
    callback.apply(None)
    if config.finetune_epochs > 0 and finetune is not None:
        model = finetune(model, config.finetune_epochs, [callback], "finetune")
    return model
