"""ONNX export and a module that runs an ONNX file in ONNX Runtime.

``export_onnx`` writes a float graph with the TorchScript-based exporter
(``dynamo=False``): on torch 2.13 with onnx 1.23 it is the one that exports
the built-in models and keeps node names tied to module names (``/0/Conv``),
which the int8 quantizer uses to leave chosen layers in float. Model types
that reach ONNX their own way register a writer in :data:`ONNX_EXPORTERS`
(an :class:`OnnxModule` is copied as it is); an int8 model's graph is written
by its quantize result (:meth:`optiforge.quantization.QuantizeResult.export_onnx`).
:class:`OnnxModule` wraps an ONNX Runtime session as an ``nn.Module`` so the
runner measures an ONNX model like any other.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.errors import ConfigError, DependencyError, ModelError
from optiforge.exporters.base import WritersByType, register_exporter
from optiforge.files import atomic_write
from optiforge.layers import matches, module_of_node

log = logging.getLogger("optiforge")

OPSET = 17
# float32 graphs in ONNX Runtime differ from PyTorch by kernel rounding only
FLOAT_TOLERANCE = 1e-4


def _as_inputs(example: Any) -> tuple[tuple, list[str]]:
    """Positional inputs and their names for ``example`` (tensor, tuple or mapping)."""
    if isinstance(example, torch.Tensor):
        return (example,), ["input"]
    if isinstance(example, Mapping):
        return (dict(example),), list(example)
    if isinstance(example, Sequence):
        return tuple(example), [f"input_{index}" for index in range(len(example))]
    raise ModelError(
        f"onnx export: the example input must be a tensor, a tuple or a mapping, got {type(example).__name__}"
    )


def _on_model_device(model: nn.Module, example: Any) -> Any:
    """``example``'s tensors moved to ``model``'s device.

    A model trained on a GPU stays there, while examples (``data.example_input``)
    are built on the CPU; tracing needs both on one device.
    """
    parameter = next(model.parameters(), None)
    if parameter is None:
        return example
    device = parameter.device
    if isinstance(example, torch.Tensor):
        return example.to(device)
    if isinstance(example, Mapping):
        return {name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in example.items()}
    if isinstance(example, Sequence):
        return tuple(value.to(device) if isinstance(value, torch.Tensor) else value for value in example)
    return example


def nodes_of_layers(path: str | Path, patterns: Sequence[str], op_types: Sequence[str] = ()) -> dict[str, list[str]]:
    """Pattern → names of the graph's nodes (of ``op_types``, or all) exported from layers matching it.

    The one map from module names to ONNX nodes (:func:`optiforge.layers.module_of_node`); a
    pattern that reaches no node is a :class:`ConfigError`, so a layer kept in float is never
    silently quantized.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    found: dict[str, list[str]] = {}
    for pattern in patterns:
        found[pattern] = [
            node.name
            for node in graph.node
            if (not op_types or node.op_type in op_types) and matches(module_of_node(node.name), [pattern])
        ]
        if not found[pattern]:
            raise ConfigError(f"no node of the exported graph comes from a layer matching '{pattern}'")
    return found


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_input: Any,
    *,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = True,
    dynamic_axes: dict | None = None,
) -> Path:
    """Write ``model`` (float) as an ONNX file whose batch dimension is dynamic.

    ``example_input`` is a tensor, a tuple of tensors or a mapping name → tensor
    (the mapping's keys become the graph's input names). Without ``input_names``
    or ``output_names``, the model's ``onnx_input_names``/``onnx_output_names``
    attributes name them, else ``input`` (``input_N``) and ``output``.
    """
    path = Path(path)
    args, default_names = _as_inputs(_on_model_device(model, example_input))
    # a model type may name its graph's ends (``onnx_input_names``/``onnx_output_names``), so every
    # path that exports it, int8 graphs included, keeps the names its users feed and read
    input_names = input_names or list(getattr(model, "onnx_input_names", None) or default_names)
    output_names = output_names or list(getattr(model, "onnx_output_names", None) or ["output"])
    if dynamic_axes is None and dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    was_training = model.training
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter warns about every traced shape computation
            torch.onnx.export(
                model,
                args,
                str(temporary),
                dynamo=False,
                opset_version=OPSET,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
            )
    except Exception as error:
        temporary.unlink(missing_ok=True)
        raise ModelError(
            f"onnx export: the model cannot be traced for ONNX ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None
    finally:
        model.train(was_training)
    temporary.replace(path)
    return path


def session_options(threads: int | None = None, spinning: bool = True):
    """Session options matched to PyTorch's thread count, so timings compare fairly.

    ``spinning``: ONNX Runtime's worker threads busy-wait for work by default.
    On a CPU shared with other processes that burns the time slices the other
    worker needs; measured here on 2 shared cores, turning it off made the
    same int8 graph 1.3x faster. On an idle, dedicated machine spinning may
    win a little.
    """
    try:
        import onnxruntime
    except ImportError:
        raise DependencyError("onnx: ONNX Runtime is not installed; pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def open_session(path: str | Path, threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime CPU session over ``path``; a file it cannot load is a :class:`ModelError`."""
    import onnxruntime

    options = session_options(threads, spinning)
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelError(f"onnx: ONNX Runtime cannot load '{path}': {str(error).splitlines()[0]}") from None


class OnnxModule(nn.Module):
    """An ONNX file run by ONNX Runtime, called like a PyTorch module.

    ``forward`` takes tensors positionally, by name, or as one mapping name → tensor, and
    returns a float tensor (a tuple when the graph has several outputs).

    >>> import torch, optiforge
    >>> from optiforge.exporters.onnx import OnnxModule, export_onnx
    >>> model = torch.nn.Linear(4, 2)
    >>> runtime = OnnxModule(export_onnx(model, "/tmp/of-linear.onnx", torch.randn(1, 4)))
    >>> runtime(torch.ones(3, 4)).shape
    torch.Size([3, 2])
    """

    def __init__(self, path: str | Path, threads: int | None = None, spinning: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.spinning = spinning
        self._runtime = open_session(self.path, threads, spinning)
        self.input_names = [item.name for item in self._runtime.get_inputs()]
        self.output_names = [item.name for item in self._runtime.get_outputs()]

    def __getstate__(self) -> dict:  # an InferenceSession cannot be copied or pickled
        state = self.__dict__.copy()
        state.pop("_runtime", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._runtime = open_session(self.path, self.threads, self.spinning)

    def feeds(self, *inputs: Any) -> dict:
        if len(inputs) == 1 and isinstance(inputs[0], Mapping):
            named = inputs[0]
            return {name: _numpy(named[name]) for name in self.input_names}
        if len(inputs) != len(self.input_names):
            raise ModelError(f"onnx model expects inputs {self.input_names}, got {len(inputs)} tensors")
        return {name: _numpy(value) for name, value in zip(self.input_names, inputs, strict=True)}

    def forward(self, *inputs: Any, **named: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feeds = self.feeds(named) if named and not inputs else self.feeds(*inputs)
        outputs = self._runtime.run(self.output_names, feeds)
        tensors = tuple(torch.from_numpy(output) for output in outputs)
        return tensors[0] if len(tensors) == 1 else tensors

    def extra_repr(self) -> str:
        return f"path='{self.path}', inputs={self.input_names}"


def _numpy(value: Any):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.float16, torch.bfloat16, torch.float64):
            value = value.float()
        return value.numpy()
    return value


def max_difference(model: nn.Module, runtime: nn.Module, example_input: Any) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's outputs."""
    on_device = _on_model_device(model, example_input)
    with torch.no_grad():
        if isinstance(on_device, Mapping):
            expected = model(**on_device)
        else:
            expected = model(*_as_inputs(on_device)[0])
    actual = runtime(*_as_inputs(example_input)[0])
    return float((torch.as_tensor(actual).float() - expected.float().cpu()).abs().max())


def _copy_onnx_file(model: OnnxModule, path: Path, example_input: Any) -> Path:
    return atomic_write(path, lambda file: file.write(model.path.read_bytes())) if model.path != path else path


# model type → writer(model, path, example_input); the most derived registered type wins, others get export_onnx
ONNX_EXPORTERS = WritersByType({OnnxModule: _copy_onnx_file})
register_onnx_exporter = ONNX_EXPORTERS.register


@register_exporter("onnx", ".onnx")
def export_onnx_format(model: nn.Module, path: Path, example_input: Any) -> Path:
    """ONNX for ONNX Runtime: the writer registered for the model's type, else the float graph."""
    writer = ONNX_EXPORTERS.find(model)
    if writer is not None:
        return writer(model, Path(path), example_input)
    return export_onnx(model, path, example_input)


__all__ = [
    "FLOAT_TOLERANCE",
    "ONNX_EXPORTERS",
    "OnnxModule",
    "export_onnx",
    "max_difference",
    "nodes_of_layers",
    "register_onnx_exporter",
]
