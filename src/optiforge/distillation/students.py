"""Student builders: a narrower or shallower model of the teacher's family.

- Sequential MLPs and CNNs (the built-in ``mlp``, ``cnn1d``, ``cnn2d``): the same
  layer pattern with ``width`` × the channels/units and the first ``depth``
  blocks; weights are freshly initialised.
- Hugging Face BERT-like encoders (a module with ``encoder.layer``): the same
  width, every other layer kept and initialised from the teacher's weights,
  as DistilBERT does (Sanh et al. 2019, https://arxiv.org/abs/1910.01108).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from optiforge.errors import ConfigError, ModelError

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm)


def shrink(
    model: nn.Module,
    width: float | None = None,
    depth: float | int | None = None,
    example_input: torch.Tensor | None = None,
) -> nn.Module:
    """A smaller untrained-or-initialised student of ``model``'s family.

    ``width``: factor on channels/hidden units (default 0.5; encoders keep
    their width, 1.0). ``depth``: blocks kept — an int is a count, a float
    in (0, 1] a fraction (default: all blocks for MLP/CNN, half the layers
    for encoders). ``example_input`` is needed only when a CNN loses blocks
    (its head's width depends on the input length).

    >>> from torch import nn
    >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128),
    ...                         nn.ReLU(), nn.Linear(128, 10))
    >>> shrink(teacher, width=0.25)
    Sequential(
      (0): Flatten(start_dim=1, end_dim=-1)
      (1): Linear(in_features=64, out_features=64, bias=True)
      (2): ReLU()
      (3): Linear(in_features=64, out_features=32, bias=True)
      (4): ReLU()
      (5): Linear(in_features=32, out_features=10, bias=True)
    )
    """
    if width is not None and not 0 < width <= 1:
        raise ConfigError(f"shrink.width: a factor in (0, 1] is expected (got {width})")
    if depth is not None and (depth <= 0 or (isinstance(depth, float) and depth > 1)):
        raise ConfigError(f"shrink.depth: a block count ≥ 1 or a fraction in (0, 1] is expected (got {depth})")
    encoder = _find_encoder(model)
    if encoder is not None:
        return _shrink_encoder(model, encoder, 1.0 if width is None else width, 0.5 if depth is None else depth)
    if isinstance(model, nn.Sequential):
        return _shrink_sequential(model, 0.5 if width is None else width, depth, example_input)
    raise ModelError(
        f"shrink: no student builder for {type(model).__name__}; supported: Sequential MLPs/CNNs "
        "(the built-in mlp, cnn1d, cnn2d) and BERT-like encoders with 'encoder.layer'. "
        "Build the student yourself and pass it to distill()"
    )


def _kept(count: int, depth: float | int | None) -> int:
    if depth is None:
        return count
    kept = depth if isinstance(depth, int) else round(count * depth)
    return max(1, min(count, kept))


# ---- Sequential MLP / CNN ----------------------------------------------------------------


def _blocks(model: nn.Sequential) -> tuple[list[list[nn.Module]], list[nn.Module], list[list[nn.Module]]]:
    """Split into conv blocks, the layers between (Flatten), dense blocks (the last is the head)."""
    conv_blocks: list[list[nn.Module]] = []
    dense_blocks: list[list[nn.Module]] = []
    between: list[nn.Module] = []
    for layer in model:
        if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if dense_blocks:
                raise ModelError("shrink: a convolution after a linear layer is not a supported Sequential family")
            conv_blocks.append([layer])
        elif isinstance(layer, nn.Linear):
            dense_blocks.append([layer])
        elif isinstance(layer, _WEIGHTED) or (
            any(p.requires_grad for p in layer.parameters(recurse=True)) and not isinstance(layer, _NORMS)
        ):
            raise ModelError(f"shrink: layer {type(layer).__name__} is not supported in a Sequential student")
        elif dense_blocks:
            dense_blocks[-1].append(layer)
        elif conv_blocks and not isinstance(layer, nn.Flatten):
            conv_blocks[-1].append(layer)
        else:
            between.append(layer)
    if not dense_blocks:
        raise ModelError("shrink: the Sequential has no linear head; supported: MLPs and CNNs ending in Linear")
    return conv_blocks, between, dense_blocks


def _rebuild(layer: nn.Module, in_size: int, out_size: int) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return nn.Linear(in_size, out_size, bias=layer.bias is not None)
    if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return type(layer)(
            in_size,
            out_size,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            groups=1,
            bias=layer.bias is not None,
            padding_mode=layer.padding_mode,
        )
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return type(layer)(
            out_size,
            eps=layer.eps,
            momentum=layer.momentum,
            affine=layer.affine,
            track_running_stats=layer.track_running_stats,
        )
    if isinstance(layer, nn.LayerNorm):
        return nn.LayerNorm(out_size, eps=layer.eps, elementwise_affine=layer.elementwise_affine)
    return copy.deepcopy(layer)


def _scaled(size: int, width: float) -> int:
    return max(1, round(size * width))


def _shrink_sequential(
    model: nn.Sequential, width: float, depth: float | int | None, example_input: torch.Tensor | None
) -> nn.Sequential:
    conv_blocks, between, dense_blocks = _blocks(model)
    hidden, head = dense_blocks[:-1], dense_blocks[-1]
    layers: list[nn.Module] = []
    if conv_blocks:  # depth counts convolution blocks; the dense layers keep their number
        kept_conv = conv_blocks[: _kept(len(conv_blocks), depth)]
        in_size = kept_conv[0][0].in_channels
        for block in kept_conv:
            out_size = _scaled(block[0].out_channels, width)
            layers += [_rebuild(layer, in_size, out_size) for layer in block]
            in_size = out_size
        layers += [copy.deepcopy(layer) for layer in between]
        if len(kept_conv) == len(conv_blocks):
            # same depth: the flattened spatial size is the original one
            spatial = dense_blocks[0][0].in_features // conv_blocks[-1][0].out_channels
            flat = in_size * spatial
        elif example_input is not None:
            with torch.no_grad():
                flat = math.prod(nn.Sequential(*layers).eval()(example_input[:1].cpu()).shape[1:])
        else:
            raise ConfigError(
                "shrink.example_input: removing convolution blocks changes the head's input width; "
                "pass example_input= (a batch of real inputs)"
            )
        kept_dense = hidden
    else:
        layers += [copy.deepcopy(layer) for layer in between]
        flat = dense_blocks[0][0].in_features
        kept_dense = hidden[: _kept(len(hidden), depth)] if hidden else []
    in_size = flat
    for block in kept_dense:
        out_size = _scaled(block[0].out_features, width)
        layers += [_rebuild(layer, in_size, out_size) for layer in block]
        in_size = out_size
    layers += [_rebuild(layer, in_size, head[0].out_features) for layer in head]
    student = nn.Sequential(*layers)
    return student.to(next(model.parameters()).device)


# ---- BERT-like encoders -------------------------------------------------------------------


def _find_encoder(model: nn.Module) -> nn.Module | None:
    """The first submodule with ``encoder.layer`` as a ModuleList (BertModel and its kin)."""
    for module in model.modules():
        encoder = getattr(module, "encoder", None)
        if isinstance(encoder, nn.Module) and isinstance(getattr(encoder, "layer", None), nn.ModuleList):
            return module
    return None


def _shrink_encoder(model: nn.Module, encoder_owner: nn.Module, width: float, depth: float | int) -> nn.Module:
    if width != 1.0:
        raise ConfigError(
            f"shrink.width: encoders keep their hidden size (DistilBERT halves the depth only); "
            f"use width=1.0 (got {width})"
        )
    path = next(name for name, module in model.named_modules() if module is encoder_owner)
    student = copy.deepcopy(model)
    owner = student.get_submodule(path) if path else student
    layers = owner.encoder.layer
    count = len(layers)
    kept = _kept(count, depth)
    # evenly spaced, starting at the first: 12 → 6 keeps 0, 2, 4, 6, 8, 10 as DistilBERT does
    indices = sorted({min(count - 1, (i * count) // kept) for i in range(kept)})
    owner.encoder.layer = nn.ModuleList(layers[i] for i in indices)
    config = getattr(owner, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(indices)
    for position, layer in enumerate(owner.encoder.layer):
        attention = getattr(getattr(layer, "attention", None), "self", None)
        if attention is not None and hasattr(attention, "layer_idx"):  # caches are indexed by position
            attention.layer_idx = position
    return student
