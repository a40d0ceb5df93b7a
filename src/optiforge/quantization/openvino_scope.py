"""Which nodes of a converted OpenVINO graph belong to which PyTorch layer.

OpenVINO names a node after the module that produced it (``__module.<name>/...``),
but when it folds a BatchNorm into the convolution before it, the convolution
takes the name of the fused multiply (``Multiply_1234``) and only the node after
it, the BatchNorm's bias ``Add``, still names a module: the BatchNorm. Running the
model once with hooks says which layer's output each BatchNorm normalises, so
such a convolution is found from its consumer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from optiforge.layers import WEIGHTED_TYPES
from optiforge.quantization.calibration import call

WEIGHTED_NODE_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")
_SCOPE = re.compile(r"^__module\.([^/]+)/")


def batchnorm_owners(model: nn.Module, example: Any) -> dict[str, str]:
    """BatchNorm module name → the weighted layer whose output it normalises, found by running ``model`` once."""
    outputs: list[tuple[torch.Tensor, str]] = []  # kept alive so no tensor is mistaken for another
    owners: dict[str, str] = {}

    def remember(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if torch.is_tensor(output):
                outputs.append((output, name))

        return hook

    def match(name: str):
        def hook(module: nn.Module, inputs: Any) -> None:
            found = [layer for tensor, layer in outputs if inputs and tensor is inputs[0]]
            if found:
                owners[name] = found[-1]

        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, WEIGHTED_TYPES):
            handles.append(module.register_forward_hook(remember(name)))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(match(name)))
    if not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()):
        return {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            call(model, example)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return owners


def first_row(example: Any) -> Any:
    """One sample of a batch (tensor, mapping or sequence of tensors): enough to run the model with hooks."""
    if torch.is_tensor(example):
        return example[:1]
    if isinstance(example, Mapping):
        return {key: first_row(value) for key, value in example.items()}
    if isinstance(example, (tuple, list)):
        return type(example)(first_row(value) for value in example)
    return example


def _scope(node: Any) -> str | None:
    found = _SCOPE.match(node.get_friendly_name())
    return found.group(1) if found else None


def layer_nodes(converted: Any, owners: Mapping[str, str]) -> dict[str, list[str]]:
    """Layer name → friendly names of its weighted nodes (convolutions, matrix products) in ``converted``."""
    nodes: dict[str, list[str]] = {}
    for node in converted.get_ordered_ops():
        if node.get_type_name() not in WEIGHTED_NODE_TYPES:
            continue
        layer = _scope(node)
        if layer is None:  # a fused convolution: named by the BatchNorm that consumes it
            consumers = [target.get_node() for output in node.outputs() for target in output.get_target_inputs()]
            scopes = {_scope(consumer) for consumer in consumers}
            layer = next((owners[scope] for scope in scopes if scope in owners), None)
        if layer is not None:
            nodes.setdefault(layer, []).append(node.get_friendly_name())
    return nodes


def float_node_names(converted: Any, float_layers: Sequence[str], owners: Mapping[str, str]) -> list[str]:
    """Friendly names of the weighted nodes of ``float_layers`` whose names do not say their module."""
    wanted = set(float_layers)
    return [
        name
        for layer, names in layer_nodes(converted, owners).items()
        if layer in wanted
        for name in names
        if not name.startswith("__module.")
    ]
