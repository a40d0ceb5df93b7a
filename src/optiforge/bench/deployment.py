"""The deployment form of a model: how it runs when it ships, and what it holds.

A report row's figures are of the model in this form: the engine that runs
it (PyTorch, PyTorch compiled by inductor, ONNX Runtime, OpenVINO), its precision
(weights stored in int8/int4/fp16/bf16, or fp32 run under bf16/fp16 autocast
when ``hardware.precision`` asks), and the threads. Parameters are counted in
the artefact itself, so an ONNX graph, an OpenVINO IR or an int8 graph reports its weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from optiforge.bench import timing
from optiforge.config import HardwareConfig
from optiforge.exporters.onnx import OnnxModule
from optiforge.exporters.openvino import OpenVinoModule, ir_parameters, ir_precision
from optiforge.hardware.capabilities import has_fast
from optiforge.hardware.inference_compile import FrozenCompiled, compile_for_inference, eager_of
from optiforge.models.builtin import count_parameters

log = logging.getLogger("optiforge")

_INT8 = (torch.int8, torch.uint8, torch.qint8, torch.quint8)
_HALF = {torch.bfloat16: "bf16", torch.float16: "fp16"}
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
# ONNX TensorProto data types: INT8, UINT8, FLOAT16, BFLOAT16
_ONNX_PRECISION = {3: "int8", 2: "int8", 10: "fp16", 16: "bf16"}
# ONNX initializers that are quantization parameters, not weights (ONNX Runtime's quantizer names)
_ONNX_QUANT_SUFFIXES = ("_scale", "_zero_point")


@dataclass
class Deployment:
    """How a row's model ran: ``engine`` (torch / onnxruntime / openvino), ``precision``, ``compiled``, ``threads``.

    ``autocast`` is true when a float32 model ran under ``hardware.precision``'s autocast;
    ``fallback`` says why a model that was to be compiled ran eagerly.
    """

    engine: str
    precision: str
    compiled: bool
    threads: int
    autocast: bool = False
    fallback: str | None = None

    def as_dict(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "fallback" or value is not None}


def _tensors(model: nn.Module) -> Iterable[torch.Tensor]:
    """Every tensor a module holds: parameters, buffers and plain attributes (PT2E's folded int8 weights)."""
    seen: set[int] = set()
    for module in model.modules():
        for value in [*module._parameters.values(), *module._buffers.values(), *vars(module).values()]:
            if torch.is_tensor(value) and id(value) not in seen:
                seen.add(id(value))
                yield value
        packed = getattr(module, "_packed_params", None)  # torch.ao int8 Linear keeps its weight packed
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, _ = packed._weight_bias()
            yield weight


def _onnx_initializers(model: OnnxModule) -> list:
    import onnx

    # a graph held in memory (``quantize()`` without ``output_dir``) has no path, only its bytes
    graph = (onnx.load(str(model.path)) if model.path is not None else onnx.load_from_string(model.data)).graph
    return [item for item in graph.initializer if not item.name.endswith(_ONNX_QUANT_SUFFIXES)]


def precision_of(model: nn.Module | Callable) -> str:
    """The precision the weights are stored in: ``int4``, ``int8``, ``fp16``, ``bf16`` or ``fp32``."""
    if isinstance(model, OnnxModule):
        kinds = {_ONNX_PRECISION.get(item.data_type) for item in _onnx_initializers(model)}
        return next((kind for kind in ("int8", "fp16", "bf16") if kind in kinds), "fp32")
    if not isinstance(model, nn.Module):
        return "fp32"
    found = set()
    for tensor in _tensors(model):
        if getattr(tensor, "target_dtype", None) == torch.int4:
            found.add("int4")
        elif tensor.dtype in _INT8 or getattr(getattr(tensor, "qdata", None), "dtype", None) in _INT8:
            found.add("int8")
        elif tensor.dtype in _HALF:
            found.add(_HALF[tensor.dtype])
    return next((kind for kind in ("int4", "int8", "fp16", "bf16") if kind in found), "fp32")


def artifact_parameters(model: nn.Module | Callable) -> tuple[int, int]:
    """(parameters, non-zero parameters) of the artefact: ONNX initializers, OpenVINO IR constants, int8
    weights included."""
    if isinstance(model, OpenVinoModule):
        return ir_parameters(model.path)
    if isinstance(model, OnnxModule):
        from onnx import numpy_helper

        total = nonzero = 0
        for item in _onnx_initializers(model):
            values = numpy_helper.to_array(item)
            if values.size > 1 and values.dtype.kind in "fiu" and item.data_type != 7:  # 7: INT64 (shapes)
                total += int(values.size)
                nonzero += int((values != 0).sum())
        return total, nonzero
    if not isinstance(model, nn.Module):
        return 0, 0
    return count_parameters(model)  # int8 packed and torchao weights included


class Autocast(nn.Module):
    """A float model run under autocast to ``dtype`` (what ``hardware.precision`` deploys), float outputs."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.device_type, self.dtype = model, device.type, dtype

    def forward(self, *inputs: Any, **named: Any) -> Any:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            outputs = self.model(*inputs, **named)
        return outputs.float() if torch.is_tensor(outputs) and outputs.is_floating_point() else outputs


@torch.inference_mode()
def slowdown(model: nn.Module, reduced: nn.Module, example: Any) -> float:
    """How many times slower ``reduced`` (a bf16/fp16 form) runs than ``model`` on ``example``: a few
    interleaved calls each, enough to tell emulated half precision (several times slower) from real units."""
    runs = {"fp32": lambda: model(example), "reduced": lambda: reduced(example)}
    return 1.0 / timing.speedups(timing.interleaved(runs, rounds=2, repeats=2, warmup=1), "fp32")["reduced"]


def warn_emulated(precision: str, device: torch.device, model: nn.Module, reduced: nn.Module, example: Any) -> None:
    """Warn, with the slowdown measured on ``model``, when ``device`` has no units for ``precision``."""
    if has_fast(precision, device):
        return
    log.warning(
        "%s on this %s is emulated (no %s units): measured %.1fx slower than fp32 on this model",
        precision,
        device.type,
        precision,
        slowdown(model, reduced, example),
    )


@dataclass
class Deployed:
    """The callable to measure, its form, and the compile time (``None`` when nothing was compiled)."""

    model: nn.Module | Callable
    form: Deployment
    compile_seconds: float | None


def deploy(
    model: nn.Module | Callable,
    hardware: HardwareConfig | None,
    device: torch.device,
    examples: list[Any],
) -> Deployed:
    """``model`` as it runs under ``hardware``: autocast to ``hardware.precision`` for a float32 model,
    compiled (inductor, frozen weights) when ``hardware.compile``; ``examples`` are the batch sizes compiled."""
    threads = torch.get_num_threads()
    if isinstance(model, OnnxModule):
        return Deployed(model, Deployment("onnxruntime", precision_of(model), False, model.threads or threads), None)
    if isinstance(model, OpenVinoModule):
        form = Deployment("openvino", ir_precision(model.path, model.precision), False, model.threads or threads)
        return Deployed(model, form, None)
    if not isinstance(model, nn.Module):
        return Deployed(model, Deployment("callable", "fp32", False, threads), None)
    model = eager_of(model)
    precision = precision_of(model)
    autocast = hardware is not None and hardware.precision != "fp32" and precision == "fp32"
    running: nn.Module = model
    if autocast:
        precision = hardware.precision
        running = Autocast(model, device, _AUTOCAST[precision])
        warn_emulated(precision, device, model, running, examples[0])
    if not isinstance(model, FrozenCompiled) and (hardware is None or not hardware.compile):
        return Deployed(running, Deployment("torch", precision, False, threads, autocast), None)
    result = compile_for_inference(running, examples)
    form = Deployment("torch", precision, result.compiled, threads, autocast, result.fallback)
    return Deployed(result.model, form, result.compile_seconds)
