"""SmoothQuant: move activation outliers into the weights before int8.

Xiao et al. 2023, https://arxiv.org/abs/2211.10438. A linear layer's input
``x`` is divided per channel by ``s`` and its weight columns multiplied by
``s``, so the product is unchanged while the activation's range shrinks:
``s_j = max|x_j|^alpha / max|W_j|^(1-alpha)``. The original paper folds
``1/s`` into the preceding LayerNorm; in a post-LayerNorm transformer (BERT,
MiniLM) that LayerNorm also feeds the residual branch, so here the division
is an explicit elementwise ``Mul`` in front of the layer (a few microseconds
next to the matrix product). Layers that read the same tensor share one
``s`` so ONNX Runtime can still merge their multiplications.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from optiforge.errors import ConfigError


class SmoothedLinear(nn.Module):
    """``linear(x * inverse_scale)`` with the scale already folded into ``linear``'s weight."""

    def __init__(self, linear: nn.Linear, inverse_scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.register_buffer("inverse_scale", inverse_scale)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs * self.inverse_scale)


@torch.no_grad()
def input_statistics(
    model: nn.Module,
    batches: Iterable,
    run: Callable[[nn.Module, object], object],
    select: Callable[[str, nn.Linear], bool],
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Per-channel max |input| of every selected Linear, and which input tensor each one reads.

    Layers reading the same tensor get the same group id (the tensor's identity
    in the first batch), so they can share one smoothing scale.
    """
    maxima: dict[str, torch.Tensor] = {}
    groups: dict[str, int] = {}
    first_batch = [True]
    alive: list[torch.Tensor] = []  # keeps the first batch's inputs alive so their ids are not reused

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            activation = inputs[0].detach()
            channel_max = activation.abs().reshape(-1, activation.shape[-1]).amax(dim=0)
            maxima[name] = torch.maximum(maxima[name], channel_max) if name in maxima else channel_max
            if first_batch[0]:
                groups[name] = id(inputs[0])
                alive.append(inputs[0])

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and select(name, module)
    ]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            run(model, batch)
            first_batch[0] = False
            alive.clear()
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not maxima:
        raise ConfigError("smoothing: no Linear layer was selected or reached by the calibration batches")
    return maxima, groups


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


@torch.no_grad()
def smooth_linears(
    model: nn.Module,
    batches: Iterable,
    *,
    alpha: float = 0.5,
    run: Callable[[nn.Module, object], object] = lambda model, batch: model(batch),
    select: Callable[[str, nn.Linear], bool] = lambda name, module: True,
) -> nn.Module:
    """A copy of ``model`` whose selected Linear layers are smoothed with strength ``alpha``.

    The copy computes the same function (up to float rounding); its
    activations are easier to quantize. ``run(model, batch)`` feeds one
    calibration batch.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"smoothing.alpha: {alpha} is outside 0..1")
    model = copy.deepcopy(model)
    maxima, groups = input_statistics(model, batches, run, select)
    members: dict[int, list[str]] = {}
    for name, group in groups.items():
        members.setdefault(group, []).append(name)
    for names in members.values():
        linears = [model.get_submodule(name) for name in names]
        activation_max = torch.stack([maxima[name] for name in names]).amax(dim=0)
        weight_max = torch.cat([linear.weight.abs() for linear in linears], dim=0).amax(dim=0)
        scale = (activation_max.clamp(min=1e-5) ** alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)
        inverse = 1.0 / scale
        for name, linear in zip(names, linears, strict=True):
            linear.weight.mul_(scale)
            _set_module(model, name, SmoothedLinear(linear, inverse))
    return model
