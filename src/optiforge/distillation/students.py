"""Student builders: a narrower or shallower model of the teacher's family.

- Sequential MLPs and CNNs (the built-in ``mlp``, ``cnn1d``, ``cnn2d``): the same
  layer pattern with ``width`` × the channels/units and the first ``depth``
  blocks; weights are freshly initialised.
- Convolutional networks (torchvision, timm, your own modules): fewer residual
  blocks per stage and narrower channels, initialised from the teacher
  (:mod:`optiforge.distillation.student_cnns`).
- Hugging Face BERT, RoBERTa, DistilBERT and GPT-2: every other layer kept with
  the teacher's weights, as DistilBERT does, and with ``width`` < 1 fewer
  feed-forward neurons and heads (:mod:`optiforge.distillation.student_transformers`).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from optiforge.distillation.student_cnns import is_cnn, shrink_cnn
from optiforge.distillation.student_transformers import (
    SUPPORTED,
    find_transformer,
    refuse_transformer,
    shrink_transformer,
)
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

    ``width``: factor on channels/hidden units (default 0.5; transformers
    keep their width, 1.0, and with less narrow their feed-forward, heads and hidden size).
    ``depth``: blocks kept — an int is a count (per stage for convolutional
    networks), a float in (0, 1] a fraction (default: all blocks for MLPs and
    CNNs, half the layers for transformers). ``example_input``: a batch of
    inputs; a Sequential CNN that loses blocks needs it (its head's width
    depends on the input length), other CNNs are traced with it (default: one
    224 × 224 image).

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
    transformer = find_transformer(model)
    if transformer is not None:
        owner, layout = transformer
        layers = len((model.get_submodule(owner) if owner else model).get_submodule(layout.layers))
        width = 1.0 if width is None else width
        return shrink_transformer(model, owner, layout, width, _kept(layers, 0.5 if depth is None else depth))
    refuse_transformer(model)
    if isinstance(model, nn.Sequential) and not any(list(layer.children()) for layer in model):
        return _shrink_sequential(model, 0.5 if width is None else width, depth, example_input)
    if is_cnn(model):
        return shrink_cnn(model, 0.5 if width is None else width, depth, example_input)
    raise ModelError(
        f"shrink: no student builder for {type(model).__name__}; supported: Sequential MLPs/CNNs "
        f"(the built-in mlp, cnn1d, cnn2d), convolutional networks (torchvision, timm: ResNet, MobileNet, "
        f"EfficientNet, ConvNeXt, RegNet, ...) and the transformers {SUPPORTED}. "
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
