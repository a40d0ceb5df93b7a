"""PyTorch's own int8 kernels (``torch.ao.quantization``, x86 backend) and dtype casts.

Static int8 and QAT use FX graph mode: it fuses Conv/BatchNorm/ReLU, places
quantize/dequantize at the graph's edges and runs whole blocks in int8.
Dynamic int8 uses the eager ``quantize_dynamic`` (Linear layers only).
torch 2.13 marks ``torch.ao.quantization`` deprecated in favour of torchao's
PT2E flow; on a CPU without ``torch.compile`` it is still the fastest int8
path measured here, so it stays behind this one file until the migration.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from optiforge.errors import ModelError
from optiforge.layers import WEIGHTED_TYPES, weighted_layers
from optiforge.quantization.calibration import activation_observer, call
from optiforge.quantization.config import QuantConfig


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence torch.ao's deprecation and observer notices (the docs say what is used)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _qconfig(config: QuantConfig, qat: bool = False):
    from torch.ao.quantization import QConfig, get_default_qat_qconfig
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

    if qat:  # fake quantization with moving-average ranges, as PyTorch recommends for QAT
        return get_default_qat_qconfig("x86")
    if config.weights.per_channel:
        weight = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    else:
        weight = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    return QConfig(activation=activation_observer(config.calibration.observer), weight=weight)


def _mapping(model: nn.Module, config: QuantConfig, float_layers: list[str], example: Any, qat: bool = False):
    from torch.ao.quantization import QConfigMapping

    qconfig = _qconfig(config, qat)
    layers = list(weighted_layers(model))
    kept = [name for name in layers if name not in float_layers]
    # integer inputs (token ids, masks) must not meet a global qconfig: FX would quantize them
    integer_inputs = any(not value.is_floating_point() for value in _example(example) if torch.is_tensor(value))
    if len(kept) * 2 >= len(layers) and not integer_inputs:
        # mostly int8: quantize everything and carve out the float layers, so
        # activations flow between int8 blocks without dequantizing
        mapping = QConfigMapping().set_global(qconfig)
        for name in float_layers:
            mapping.set_module_name(name, None)
    else:
        # mostly float (one layer at a time for sensitivity) or integer inputs: only these layers
        mapping = QConfigMapping().set_global(None)
        for name in kept:
            mapping.set_module_name(name, qconfig)
    return mapping


def _example(batch: Any) -> tuple:
    if isinstance(batch, dict):
        return tuple(batch.values())
    return (batch,)


def _traced(prepare: Callable, model: nn.Module, *args: Any) -> nn.Module:
    try:
        return prepare(model, *args)
    except Exception as error:
        raise ModelError(
            "quantize: PyTorch's FX graph mode cannot trace this model for int8 "
            f"({type(error).__name__}: {str(error).splitlines()[0]}); try engine: onnxruntime, "
            "or scheme: int8_dynamic / int8_weight_only, which need no tracing"
        ) from None


def static(model: nn.Module, config: QuantConfig, batches: list[Any], float_layers: list[str]) -> nn.Module:
    """Post-training static int8: observe activation ranges on ``batches``, then convert."""
    from torch.ao.quantization import quantize_fx

    with quiet():
        float_model = copy.deepcopy(model).cpu().eval()
        mapping = _mapping(float_model, config, float_layers, batches[0])
        prepared = _traced(quantize_fx.prepare_fx, float_model, mapping, _example(batches[0]))
        with torch.no_grad():
            for batch in batches:
                call(prepared, batch)
        return quantize_fx.convert_fx(prepared)


def prepare_qat(model: nn.Module, config: QuantConfig, example: Any, float_layers: list[str]) -> nn.Module:
    """Insert fake quantization (and fuse Conv/BN/ReLU) for quantization-aware training."""
    from torch.ao.quantization import quantize_fx

    with quiet():
        trainable = copy.deepcopy(model).cpu().train()
        mapping = _mapping(trainable, config, float_layers, example, qat=True)
        return _traced(quantize_fx.prepare_qat_fx, trainable, mapping, _example(example))


def convert_qat(prepared: nn.Module) -> nn.Module:
    """Turn a fake-quantized model into real int8 modules."""
    from torch.ao.quantization import quantize_fx

    with quiet():
        return quantize_fx.convert_fx(copy.deepcopy(prepared).cpu().eval())


def dynamic(model: nn.Module, config: QuantConfig, float_layers: list[str]) -> tuple[nn.Module, list[str]]:
    """Dynamic int8 on Linear layers; returns the model and the layers it had to leave float.

    ``MultiheadAttention.out_proj`` stays float (listed as unsupported); a model with no
    Linear layer to quantize is a :class:`ModelError`, never the float model returned as int8.
    """
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    float_model = copy.deepcopy(model).cpu().eval()
    linear = [name for name, module in float_model.named_modules() if quantizable_linear(module)]
    unsupported = [name for name in weighted_layers(float_model) if name not in linear and name not in float_layers]
    qconfig = per_channel_dynamic_qconfig if config.weights.per_channel else default_dynamic_qconfig
    spec = {name: qconfig for name in linear if name not in float_layers}
    if not spec:
        raise ModelError(
            f"quantize: scheme 'int8_dynamic' quantizes Linear layers and {type(model).__name__} has none to "
            f"quantize (layers: {', '.join(weighted_layers(float_model)) or 'none'}); "
            "use scheme 'int8_static', which also quantizes convolutions"
        )
    with quiet():
        return quantize_dynamic(float_model, spec, dtype=torch.qint8), unsupported


def quantizable_linear(module: nn.Module) -> bool:
    """A Linear whose weight int8 kernels may replace; ``MultiheadAttention.out_proj`` is read directly."""
    from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

    return isinstance(module, nn.Linear) and not isinstance(module, NonDynamicallyQuantizableLinear)


class CastModel(nn.Module):
    """A model cast to fp16/bf16 that still takes and returns float32 tensors."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    def forward(self, *inputs: Any, **named: Any) -> Any:
        cast = [
            value.to(self.dtype) if torch.is_tensor(value) and value.is_floating_point() else value for value in inputs
        ]
        named = {
            key: value.to(self.dtype) if torch.is_tensor(value) and value.is_floating_point() else value
            for key, value in named.items()
        }
        outputs = self.model(*cast, **named)
        return outputs.float() if torch.is_tensor(outputs) else outputs


def cast(model: nn.Module, scheme: str) -> nn.Module:
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[scheme]
    return CastModel(copy.deepcopy(model).eval(), dtype)


def unconverted_layers(model: nn.Module, float_layers: list[str], names: list[str]) -> list[str]:
    """Layers meant for int8 that are still float modules after conversion."""
    modules = dict(model.named_modules())
    return [name for name in names if name not in float_layers and type(modules.get(name)) in WEIGHTED_TYPES]
