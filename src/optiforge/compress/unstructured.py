"""Unstructured magnitude pruning: one-shot or gradual, global or per layer."""

from __future__ import annotations

from torch import nn

from optiforge.compress.common import Trainer, chosen_layers, layer_values
from optiforge.compress.config import PruneConfig
from optiforge.compress.masks import MaskCallback, magnitude_masks, sparsity_groups
from optiforge.compress.weights import choose_weights


def prune_unstructured(
    model: nn.Module, config: PruneConfig, finetune: Trainer
) -> tuple[nn.Module, list[str], dict[str, str]]:
    """Zero the smallest weights; with fine-tuning, keep them zero while training.

    Returns (model, layers pruned, tensors left alone → why). Every weight
    tensor of :mod:`optiforge.compress.weights` is covered, tied ones once.
    """
    chosen = choose_weights(model, config.layers)
    if not chosen.tensors:
        chosen_layers(model, config.layers, "magnitude pruning")  # raises, naming what left nothing
    layer_sparsity = layer_values(model, chosen.layers, config.layer_sparsity, "layer_sparsity")
    owner = {name: name.rpartition(".")[0] for name in chosen.tensors}
    tensor_sparsity = {name: layer_sparsity[layer] for name, layer in owner.items() if layer in layer_sparsity}
    names = list(chosen.tensors)
    groups = sparsity_groups(names, config.sparsity, config.scope, tensor_sparsity)
    weights = dict(chosen.tensors)

    if config.schedule is not None:
        start = [(group, config.schedule.initial_sparsity) for group, _ in groups]
        masks = magnitude_masks(weights, start)
        callback = MaskCallback(weights, masks, groups=groups, gradual=config.schedule)
    else:
        callback = MaskCallback(weights, magnitude_masks(weights, groups))
    callback.apply(None)
    model = finetune(model, [callback])
    reasons = {name: why for name, why in chosen.skipped.items() if why != "left out by the layers filter"}
    return model, chosen.layers, reasons
