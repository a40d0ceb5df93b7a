"""Models from files: ONNX graphs converted to PyTorch, and ``torch.export`` programs.

An ONNX file is how a model made in TensorFlow/Keras (tf2onnx) or MXNet enters:
onnx2torch rebuilds it as a ``torch.fx`` module of ordinary layers. Both
sources check the file's input shape against the data before anything runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from optiforge.errors import ConfigError, DataError, ModelError
from optiforge.imports import optional_import
from optiforge.models.sources import import_compiled


def _existing_file(path: str, field: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{field}: no file '{file}'")
    return file


def check_input_shape(expected: Sequence[int | None], input_shape: tuple[int, ...], where: str) -> None:
    """``expected`` is the model's input shape with the batch first; ``None`` is a dimension of any size."""
    found = (None, *input_shape)
    fits = len(expected) == len(found) and all(
        size is None or other is None or size == other for size, other in zip(expected, found, strict=True)
    )
    if not fits:
        shown = ", ".join("any" if size is None else str(size) for size in expected[1:])
        raise DataError(
            f"{where}: the model takes inputs of shape (batch, {shown}), the data gives (batch, "
            f"{', '.join(str(size) for size in input_shape)})"
        )


def _onnx_input_shape(proto, path: Path, where: str) -> list[int | None]:
    initializers = {initializer.name for initializer in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise ModelError(
            f"{where}: '{path.name}' takes {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); "
            "optiforge feeds a model one tensor"
        )
    dimensions = inputs[0].type.tensor_type.shape.dim
    return [dimension.dim_value if dimension.HasField("dim_value") else None for dimension in dimensions]


def onnx_model(path: str, input_shape: tuple[int, ...], num_classes: int, where: str) -> nn.Module:
    """The ONNX file at ``path`` as a PyTorch module (onnx2torch); an operator it cannot convert is named."""
    file = _existing_file(path, f"{where}.onnx")
    onnx = optional_import("onnx", "model.onnx")
    try:
        proto = onnx.load(str(file))
    except Exception as error:  # noqa: BLE001  any parse failure means the file is not ONNX
        raise ModelError(f"{where}.onnx: '{file}' is not an ONNX model ({type(error).__name__})") from None
    check_input_shape(_onnx_input_shape(proto, file, f"{where}.onnx"), input_shape, f"{where}.onnx")
    onnx2torch = import_compiled("onnx2torch", "onnx", f"{where}.onnx")
    from onnx2torch.node_converters.registry import get_converter

    versions = {opset.domain: opset.version for opset in proto.opset_import}
    unsupported = set()
    for node in proto.graph.node:
        try:
            get_converter(domain=node.domain, operation_type=node.op_type, version=versions.get(node.domain, 1))
        except NotImplementedError:
            unsupported.add(f"{node.op_type} (opset {versions.get(node.domain, 1)}, node '{node.name}')")
    if unsupported:
        raise ModelError(
            f"{where}.onnx: '{file.name}' uses operators onnx2torch cannot convert: {', '.join(sorted(unsupported))}"
        )
    try:
        return onnx2torch.convert(proto)
    except Exception as error:  # noqa: BLE001  a converter refusing an attribute names it in its message
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"{where}.onnx: cannot convert '{file.name}': {reason}") from None


class ExportedProgramModule(nn.Module):
    """A ``torch.export`` program's module, trainable, with its train/eval behaviour fixed at export.

    The module an exported program unlifts refuses ``train()`` and ``eval()`` (torch 2.13);
    dropout and batch norm run as they were exported, so the mode here is only recorded.
    """

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.program(*inputs)

    def train(self, mode: bool = True) -> ExportedProgramModule:
        self.training = mode
        return self


def exported_model(path: str, input_shape: tuple[int, ...], num_classes: int, where: str) -> nn.Module:
    """``torch.export.load(path).module()``, with the program's input shape checked against the data."""
    file = _existing_file(path, f"{where}.exported")
    try:
        program = torch.export.load(str(file))
    except Exception as error:  # noqa: BLE001  any load failure means the file is not a program
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"{where}.exported: '{file}' is not a torch.export program: {reason}") from None
    user_inputs = list(program.graph_signature.user_inputs)
    if len(user_inputs) != 1:
        raise ModelError(
            f"{where}.exported: '{file.name}' takes {len(user_inputs)} inputs; optiforge feeds a model one tensor"
        )
    placeholder = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name in user_inputs)
    example = placeholder.meta.get("val")
    if isinstance(example, torch.Tensor):
        shape = [int(size) if isinstance(size, int) else None for size in example.shape]
        check_input_shape(shape, input_shape, f"{where}.exported")
    return ExportedProgramModule(program.module())
