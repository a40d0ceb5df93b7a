"""OpenVINO IR export and a module that runs an IR file in OpenVINO.

``convert`` turns a PyTorch model into an ``openvino.Model`` (OpenVINO's own
PyTorch frontend, traced on an example input; every input axis stays
dynamic); ``save_ir`` writes it as IR, an ``.xml`` graph beside a ``.bin``
of weights, which plain OpenVINO loads with ``openvino.Core().read_model``.
Model types that reach OpenVINO their own way register a writer with
:func:`register_openvino_exporter` (an :class:`OpenVinoModule` is copied as
it is). :class:`OpenVinoModule` wraps a compiled IR as an ``nn.Module`` so
the runner measures it like any other model.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from optiforge.errors import ConfigError, ModelError
from optiforge.exporters.base import WritersByType, register_exporter
from optiforge.exporters.onnx import register_onnx_exporter
from optiforge.imports import optional_import

PRECISIONS = ("f32", "bf16")
# float32 IR in OpenVINO differs from PyTorch by kernel rounding only
FLOAT_TOLERANCE = 1e-4


def openvino():
    """The ``openvino`` package, or a :class:`DependencyError` naming the extra."""
    return optional_import("openvino", "OpenVINO")


def bf16_supported() -> bool:
    """Whether this CPU has bf16 units OpenVINO uses (AVX-512 BF16 or AMX), as OpenVINO reports them."""
    capabilities = openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in capabilities


def check_precision(precision: str) -> None:
    """Refuse an unknown precision, and bf16 on a CPU that would only emulate it."""
    if precision not in PRECISIONS:
        raise ConfigError(f"openvino: precision '{precision}' is not offered; choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and not bf16_supported():
        raise ConfigError(
            "openvino: precision 'bf16' needs a CPU with bf16 units (AVX-512 BF16 or AMX); this CPU has none "
            "(OpenVINO's OPTIMIZATION_CAPABILITIES lacks BF16), so bf16 would be emulated and slower than f32"
        )


def compile_config(precision: str = "f32", threads: int | None = None) -> dict:
    """Compile settings: the inference precision and PyTorch's thread count in one stream, so timings compare."""
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()),
    }


def _example_arguments(example: Any) -> Any:
    if isinstance(example, Mapping):
        return dict(example)
    if isinstance(example, Sequence) and not isinstance(example, torch.Tensor):
        return tuple(example)
    return example


def _example_tensors(example: Any) -> list[torch.Tensor]:
    if isinstance(example, torch.Tensor):
        return [example]
    if isinstance(example, Mapping):
        return list(example.values())
    return list(example)


def convert(
    model: nn.Module,
    example_input: Any,
    output_names: Sequence[str] | None = None,
    extensions: Sequence[Any] = (),
    dynamic_batch_only: bool = True,
    input_names: Sequence[str] | None = None,
):
    """``model`` (float, eval mode) as an ``openvino.Model`` traced on ``example_input``.

    The batch axis is dynamic; with ``dynamic_batch_only`` off every axis is
    (a sentence's length). Inputs are named ``input_names``, else as in ONNX
    export (the model's ``onnx_input_names``/``onnx_output_names``, else ``input``
    for one tensor, the keys of a mapping). ``extensions``:
    OpenVINO conversion extensions for custom operators. An operator
    OpenVINO's PyTorch frontend cannot convert is named in the :class:`ModelError`.
    """
    ov = openvino()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            options = {"extension": list(extensions)} if extensions else {}
            converted = ov.convert_model(model, example_input=_example_arguments(example_input), **options)
    except Exception as error:  # the frontend raises its own exception types, naming the operator
        message = " ".join(str(error).split())[:600]
        raise ModelError(
            f"openvino: the model cannot be converted to OpenVINO ({type(error).__name__}: {message})"
        ) from None
    finally:
        model.train(was_training)
    if dynamic_batch_only:
        tensors = _example_tensors(example_input)
        if len(tensors) == len(converted.inputs):
            converted.reshape(
                {port: [-1, *tensor.shape[1:]] for port, tensor in zip(converted.inputs, tensors, strict=True)}
            )
    input_names = input_names or getattr(model, "onnx_input_names", None)  # a model type's names for its graph
    output_names = output_names or getattr(model, "onnx_output_names", None)
    if input_names is None and isinstance(example_input, torch.Tensor):
        input_names = ["input"]
    elif input_names is None and isinstance(example_input, Mapping):
        input_names = list(example_input)
    for port, name in zip(converted.inputs, input_names or [], strict=False):
        port.get_tensor().set_names({name})
        port.get_node().set_friendly_name(name)  # OpenVinoModule feeds inputs by the node's name
    for output, name in zip(converted.outputs, output_names or ["output"], strict=False):
        output.get_tensor().set_names({name})
    return converted


def save_ir(converted: Any, path: str | Path) -> Path:
    """Write ``converted`` (an ``openvino.Model``) as ``path`` (``.xml``) and its ``.bin``, weights kept float32."""
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"openvino: an IR file is named '*.xml', got '{path}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".openvino-", dir=path.parent))
    try:
        openvino().save_model(converted, str(work / path.name), compress_to_fp16=False)
        (work / path.name).with_suffix(".bin").replace(path.with_suffix(".bin"))
        (work / path.name).replace(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def copy_ir(source: Path, destination: Path) -> Path:
    """Copy the IR ``source`` (``.xml`` and ``.bin``) to ``destination``."""
    if source.resolve() == destination.resolve():
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source.with_suffix(".bin"), destination.with_suffix(".bin"))
    shutil.copyfile(source, destination)
    return destination


def input_names_of(model: Any) -> list[str]:
    """The graph's input names as written (a compiled model adds the names of tensors fused into them)."""
    return [port.get_node().get_friendly_name() for port in model.inputs]


def compile_ir(path: str | Path, precision: str = "f32", threads: int | None = None):
    """(compiled CPU model, input names) for the IR at ``path``; an unloadable file is a :class:`ModelError`."""
    path = Path(path)
    ov = openvino()
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise ModelError(f"openvino: '{path}' needs its graph ('.xml') and weights ('.bin') side by side")
    core = ov.Core()
    try:
        model = core.read_model(str(path))
        return core.compile_model(model, "CPU", compile_config(precision, threads)), input_names_of(model)
    except Exception as error:
        raise ModelError(f"openvino: OpenVINO cannot load '{path}': {str(error).splitlines()[0]}") from None


# element types of shapes, axes and indices: constants of these types are not weights
_INDEX_TYPES = ("i32", "i64", "u32", "u64", "boolean")
# inputs that hold quantization parameters: FakeQuantize's ranges, a dequantization's scale and zero point
_QUANT_PARAMETER_INPUTS = {"FakeQuantize": (1, 2, 3, 4)}
_DEQUANTIZATION_TYPES = ("Multiply", "Subtract")


def _is_quantization_parameter(node: Any) -> bool:
    """Whether every consumer of ``node`` (a constant, or its Convert) takes it as a quantization range, or as the
    scale or zero point of a dequantization (input 1 of a Multiply/Subtract whose input 0 is the weight's path)."""
    targets = list(node.output(0).get_target_inputs())
    if not targets:
        return False
    for target in targets:
        consumer, index = target.get_node(), target.get_index()
        kind = consumer.get_type_name()
        if kind == "Convert":  # a zero point stored as uint8 is converted before it is subtracted
            if not _is_quantization_parameter(consumer):
                return False
            continue
        if index in _QUANT_PARAMETER_INPUTS.get(kind, ()):
            continue
        if kind not in _DEQUANTIZATION_TYPES or index != 1:
            return False
        if consumer.input_value(0).get_node().get_type_name() not in ("Convert", "Subtract"):
            return False
    return True


def ir_parameters(path: str | Path) -> tuple[int, int]:
    """(parameters, non-zero parameters) of the IR at ``path``: its weight constants, int8/int4 included,
    quantization ranges, scales and zero points and shape constants left out (as an ONNX graph's are)."""
    model = openvino().Core().read_model(str(path))
    total = nonzero = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Constant" or node.get_output_element_type(0).get_type_name() in _INDEX_TYPES:
            continue
        size = int(np.prod(list(node.get_output_shape(0)), dtype=np.int64))
        if size <= 1 or _is_quantization_parameter(node):
            continue
        total += size
        element = node.get_output_element_type(0)
        packed = element.bitwidth < 8  # int4/uint4 constants come back packed two to a byte
        nonzero += size if packed else int(np.count_nonzero(node.get_data()))
    return total, nonzero


def ir_precision(path: str | Path, hint: str = "f32") -> str:
    """What the IR at ``path`` computes in: ``int4`` or ``int8`` when it holds quantized weights or
    FakeQuantize nodes, else the compile ``hint`` (``f32`` → ``fp32``, ``bf16``)."""
    model = openvino().Core().read_model(str(path))
    found = set()
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            found.add("int8")
        elif kind == "Constant":
            element = node.get_output_element_type(0).get_type_name()
            if element in ("i4", "u4"):
                found.add("int4")
            elif element in ("i8", "u8") and not _is_quantization_parameter(node):
                found.add("int8")
    return next((kind for kind in ("int4", "int8") if kind in found), "fp32" if hint == "f32" else hint)


def _numpy(value: Any):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.float16, torch.bfloat16, torch.float64):
            value = value.float()
        return value.numpy()
    return value


class OpenVinoModule(nn.Module):
    """An IR file compiled by OpenVINO for the CPU, called like a PyTorch module.

    ``precision`` is OpenVINO's inference precision hint (``f32``, or ``bf16``
    where the CPU has bf16 units); ``threads`` defaults to PyTorch's. ``forward``
    takes tensors positionally, by name, or as one mapping name → tensor, and
    returns a float tensor (a tuple when the graph has several outputs).

    >>> import torch
    >>> from optiforge.exporters.openvino import OpenVinoModule, convert, save_ir
    >>> model = torch.nn.Linear(4, 2)
    >>> runtime = OpenVinoModule(save_ir(convert(model, torch.randn(1, 4)), "/tmp/of-linear.xml"))
    >>> runtime(torch.ones(3, 4)).shape
    torch.Size([3, 2])
    """

    def __init__(self, path: str | Path, precision: str = "f32", threads: int | None = None) -> None:
        super().__init__()
        check_precision(precision)
        self.path = Path(path)
        self.precision = precision
        self.threads = threads
        self._compiled, self.input_names = compile_ir(self.path, precision, threads)
        self._request = self._compiled.create_infer_request()

    def __getstate__(self) -> dict:  # a compiled model cannot be copied or pickled
        state = self.__dict__.copy()
        state.pop("_compiled", None)
        state.pop("_request", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._compiled, _ = compile_ir(self.path, self.precision, self.threads)
        self._request = self._compiled.create_infer_request()

    def feeds(self, *inputs: Any) -> dict:
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            named = inputs[0]
            missing = [name for name in self.input_names if name not in named]
            if missing:
                raise ModelError(f"openvino model expects inputs {self.input_names}, missing {missing}")
            return {name: _numpy(named[name]) for name in self.input_names}
        if len(inputs) != len(self.input_names):
            raise ModelError(f"openvino model expects inputs {self.input_names}, got {len(inputs)} tensors")
        return {name: _numpy(value) for name, value in zip(self.input_names, inputs, strict=True)}

    def run(self, feeds: dict) -> tuple[torch.Tensor, ...]:
        results = self._request.infer(feeds)
        return tuple(torch.from_numpy(results[output].copy()) for output in self._compiled.outputs)

    def forward(self, *inputs: Any, **named: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        tensors = self.run(self.feeds(named) if named and not inputs else self.feeds(*inputs))
        return tensors[0] if len(tensors) == 1 else tensors

    def extra_repr(self) -> str:
        return f"path='{self.path}', precision={self.precision}, inputs={self.input_names}"


def _copy_module(model: OpenVinoModule, path: Path, example_input: Any) -> Path:
    return copy_ir(model.path, path)


@register_onnx_exporter(OpenVinoModule)
def _refuse_onnx(model: OpenVinoModule, path: Path, example_input: Any) -> Path:
    raise ModelError(
        f"export onnx: the model is the OpenVINO IR '{model.path}', which does not convert back to ONNX; "
        "export it with 'export: [openvino]'"
    )


# model type → writer(model, path, example_input); the most derived registered type wins, others are converted
OPENVINO_EXPORTERS = WritersByType({OpenVinoModule: _copy_module})
register_openvino_exporter = OPENVINO_EXPORTERS.register


@register_exporter("openvino", ".xml")
def export_openvino(model: nn.Module, path: Path, example_input: Any) -> Path:
    """OpenVINO IR (``.xml`` + ``.bin``): the writer registered for the model's type, else the float graph."""
    writer = OPENVINO_EXPORTERS.find(model)
    if writer is not None:
        return writer(model, Path(path), example_input)
    if example_input is None:
        raise ConfigError("export openvino: converting a PyTorch model needs an example input")
    return save_ir(convert(model, example_input), path)


__all__ = [
    "FLOAT_TOLERANCE",
    "OPENVINO_EXPORTERS",
    "OpenVinoModule",
    "bf16_supported",
    "convert",
    "export_openvino",
    "register_openvino_exporter",
    "save_ir",
]
