"""The ``factorize`` verb: truncated SVD of Linear and Conv layers.

A weight W (out × in, a conv's kernel flattened into ``in``) is replaced by
two factors of rank r, U_r √S_r and √S_r V_rᵀ: a layer into r channels and a
linear (or 1×1 conv) layer out of them. Only layers where r·(in + out) is
below in·out are replaced, so every replacement saves parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optiforge.compress.checks import check_result, example_for, rollback_on_failure
from optiforge.compress.common import FactorizeResult, chosen_layers, skipped_layers, trainer, weight_sparsity
from optiforge.compress.config import FactorizeConfig
from optiforge.config import TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.training.finetune import Finetune

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def choose_rank(singular_values: torch.Tensor, config: FactorizeConfig) -> int:
    """Rank kept: a share of the full rank, or the smallest rank keeping a share of the energy."""
    full = singular_values.numel()
    if config.rank_ratio is not None:
        return max(1, round(config.rank_ratio * full))
    energy = torch.cumsum(singular_values.double() ** 2, 0)
    return int(torch.searchsorted(energy, config.energy * energy[-1]).item()) + 1


def _factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).to(weight.dtype), (root[:, None] * vh[:rank]).to(weight.dtype)


def factorize_layer(layer: nn.Module, config: FactorizeConfig) -> nn.Module | None:
    """Two smaller layers equal to the rank-r approximation of ``layer``, or None if none saves parameters."""
    matrix = layer.weight.detach().flatten(1)  # (out, in · kernel)
    out_size, in_size = matrix.shape
    if isinstance(layer, nn.Linear):
        pass
    elif getattr(layer, "groups", 1) != 1 or getattr(layer, "transposed", False):
        return None
    rank = choose_rank(torch.linalg.svdvals(matrix.double()), config)
    if rank * (in_size + out_size) >= in_size * out_size:
        return None
    left, right = _factors(matrix, rank)
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first, second = nn.Linear(in_size, rank, bias=False), nn.Linear(rank, out_size, bias=bias)
        first.weight.data.copy_(right)
    else:
        conv = _CONV[layer.weight.dim() - 2]
        first = conv(
            layer.in_channels,
            rank,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=False,
            padding_mode=layer.padding_mode,
        )
        second = conv(rank, out_size, 1, bias=bias)
        first.weight.data.copy_(right.view(rank, *layer.weight.shape[1:]))
    second.weight.data.copy_(left.view(second.weight.shape))
    if bias:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second).to(layer.weight.device)


def factorize_with_result(
    model: nn.Module,
    config: FactorizeConfig,
    data: TaskData | None = None,
    *,
    train_config: TrainConfig | None = None,
    finetune: Finetune | None = None,
    example_inputs: Any = None,
) -> FactorizeResult:
    """Factorize ``model`` in place; return it with the layers replaced (see :func:`factorize`).

    ``skipped`` lists the Linear and Conv layers left whole: filtered out, or
    where the kept rank would not save parameters; ``MultiheadAttention.out_proj``
    is never replaced (the attention module reads its weight directly). The
    result is run on ``example_inputs`` (else two of ``data``'s test inputs)
    and refused with a :class:`ModelError` if it fails.
    """
    example = example_for(example_inputs, data)
    with rollback_on_failure(model, enabled=example is not None):
        train = trainer(data, train_config, finetune, config.finetune, "factorize")
        layers = chosen_layers(model, config.layers, "factorize")
        replaced = []
        reasons: dict[str, str] = {}
        for name, layer in layers.items():
            owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            if isinstance(owner, nn.MultiheadAttention):
                reasons[name] = "MultiheadAttention reads its out_proj weight directly, so it stays whole"
                continue
            replacement = factorize_layer(layer, config)
            if replacement is None:
                continue
            owner_name, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(owner_name) if owner_name else model, attribute, replacement)
            replaced.append(name)
        if replaced:
            model = train(model)
        check_result(model, example, "factorize")
    skipped = [name for name in skipped_layers(model, replaced) if name.rpartition(".")[0] not in replaced]
    return FactorizeResult(
        model, "factorize", config, replaced, skipped, weight_sparsity(model), train.history, reasons=reasons
    )


def factorize(
    model: nn.Module,
    config: FactorizeConfig,
    data: TaskData | None = None,
    *,
    train_config: TrainConfig | None = None,
    finetune: Finetune | None = None,
    example_inputs: Any = None,
) -> nn.Module:
    """Replace layers by low-rank pairs where that saves parameters (in place).

    With ``finetune.epochs`` the factorized model is trained by ``finetune``,
    or else on ``data`` with ``train_config``.

    >>> import torch
    >>> from optiforge.compress import FactorizeConfig, factorize
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    >>> model = factorize(model, FactorizeConfig(rank_ratio=0.25))
    >>> [tuple(p.shape) for p in model[0].parameters()]
    [(16, 64), (64, 16), (64,)]
    """
    return factorize_with_result(
        model, config, data, train_config=train_config, finetune=finetune, example_inputs=example_inputs
    ).model
