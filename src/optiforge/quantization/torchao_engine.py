"""torchao's ``quantize_``: int8 weight-only, int8 dynamic, int4 weight-only (Linear layers).

int4 uses ``IntxWeightOnlyConfig(torch.int4, PerGroup(group_size))``: on a
CPU, torchao 0.18's ``Int4WeightOnlyConfig`` needs CUDA (tile-packed layout)
or the separate ``mslk`` kernels package. In memory the int4 codes sit one per
int8 byte; the artefact packs two per byte (:mod:`optiforge.quantization.artifact`).
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn

from optiforge.errors import DependencyError, ModelError
from optiforge.imports import quiet_optional_imports
from optiforge.layers import weighted_layers
from optiforge.quantization.config import QuantConfig
from optiforge.quantization.torch_engine import quantizable_linear

log = logging.getLogger("optiforge")


def _torchao_config(config: QuantConfig):
    try:
        with warnings.catch_warnings(), quiet_optional_imports():
            warnings.simplefilter("ignore")
            import torchao.quantization as ao
            from torchao.quantization.granularity import PerGroup, PerRow, PerTensor
    except ImportError as error:
        raise DependencyError(f"quantize.engine: 'torchao' cannot be imported ({error}); pip install torchao") from None
    if config.scheme == "int8_weight_only":
        return ao.Int8WeightOnlyConfig(granularity=PerRow() if config.weights.per_channel else PerTensor())
    if config.scheme == "int8_dynamic":
        return ao.Int8DynamicActivationInt8WeightConfig(
            granularity=PerRow() if config.weights.per_channel else PerTensor()
        )
    if config.scheme == "int4_weight_only":
        return ao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(config.weights.group_size))
    raise AssertionError(config.scheme)


def quantize_torchao(model: nn.Module, config: QuantConfig, float_layers: list[str]) -> tuple[nn.Module, list[str]]:
    """Quantize the Linear layers ``config.layers`` chooses, less ``float_layers``; returns the model
    and the layers torchao had to leave float."""
    from torchao.quantization import quantize_

    quantized = copy.deepcopy(model).cpu().eval()
    layer_filter = config.layers.model_copy(update={"exclude": [*config.layers.exclude, *float_layers]})
    wanted = layer_filter.fn(quantized, field="quantize.layers")
    unsupported = []
    chosen = set()
    for name, module in weighted_layers(quantized).items():
        if not wanted(module, name):
            continue
        if not quantizable_linear(module):
            # torchao's CPU configs quantize Linear weights only; MultiheadAttention reads out_proj's weight itself
            unsupported.append(name)
        elif config.scheme == "int4_weight_only" and module.in_features % config.weights.group_size:
            unsupported.append(name)  # a group must not straddle rows
        else:
            chosen.add(name)
    if not chosen:
        raise ModelError(
            f"quantize: torchao's {config.scheme} quantizes Linear layers and none of {type(model).__name__} "
            f"is left to quantize (left float: {', '.join(unsupported) or 'none'}); "
            "use scheme 'int8_static', which also quantizes convolutions"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_(
            quantized, _torchao_config(config), filter_fn=lambda module, name: name in chosen and wanted(module, name)
        )
    modules = dict(quantized.named_modules())
    for name in chosen:
        _as_buffer(modules[name])
    return quantized, unsupported


def _as_buffer(layer: nn.Linear) -> None:
    """Hold a torchao weight as a buffer, warmed up once under ``no_grad``.

    torchao 0.18 tensors cannot be detached under ``torch.inference_mode``
    ("Cannot set version_counter for inference tensor"), which the measurement
    runs in; as a buffer the weight is not a trainable parameter (it is not one)
    and a first call under ``no_grad`` settles the forward path.
    """
    weight = layer.weight
    del layer.weight
    layer.register_buffer("weight", weight)
    with torch.no_grad():
        layer(torch.zeros(1, layer.in_features))
