"""PyTorch int8 through PT2E (torchao's ``torchao.quantization.pt2e``) and inductor.

The model is captured with ``torch.export`` (batch dimension dynamic),
annotated by ``X86InductorQuantizer`` (int8 activations per tensor, int8
weights per output channel; histogram observers for static activation
ranges), calibrated (static), trained with fake quantization (QAT,
``prepare_qat_pt2e``) or left to scale activations at run time (dynamic,
Linear layers only), then converted to the reference quantized graph.
That graph runs as it is (quantize → dequantize → float op: exact but slow)
and ships compiled: inductor with frozen weights replaces each pattern with
an int8 oneDNN kernel (:class:`PT2EModel`). The artefact is a
``torch.export`` program (``.pt2``) that ``torch.export.load`` runs with
torch alone.

Two inductor limits of torch 2.13 are worked around here: its int8
convolution lowering mishandles ``conv1d`` (a wrong output shape), so each
Conv1d (with its BatchNorm1d and ReLU) runs as a Conv2d over a height of 1;
and the same lowering fails with a symbolic batch size (a stride assertion),
so the compiled int8 graph is specialised per batch size (each new batch size
compiles once).
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.errors import ModelError
from optiforge.files import atomic_write
from optiforge.hardware.inference_compile import FrozenCompiled
from optiforge.imports import optional_import, quiet_optional_imports
from optiforge.layers import weighted_layers
from optiforge.quantization.calibration import call

log = logging.getLogger("optiforge")


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), quiet_optional_imports():
        warnings.simplefilter("ignore")
        yield


def _pt2e() -> tuple[Any, Any]:
    with _quiet():
        quantize_pt2e = optional_import("torchao.quantization.pt2e.quantize_pt2e", "quantize engine 'pt2e'")
        x86 = optional_import("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer", "quantize engine 'pt2e'")
    return quantize_pt2e, x86


class Conv1dAs2d(nn.Module):
    """A Conv1d (with the BatchNorm1d and ReLU after it) computed as a Conv2d over a height of 1.

    Numerically the same; inductor 2.13 lowers int8 conv2d correctly and int8 conv1d wrongly.
    """

    def __init__(self, conv: nn.Conv1d, norm: nn.BatchNorm1d | None = None, relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            (1, conv.kernel_size[0]),
            (1, conv.stride[0]),
            (0, conv.padding[0]),
            (1, conv.dilation[0]),
            conv.groups,
            conv.bias is not None,
        )
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)
        self.norm = None
        if norm is not None:
            self.norm = nn.BatchNorm2d(norm.num_features, norm.eps, norm.momentum, norm.affine)
            self.norm.load_state_dict(norm.state_dict())
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.unsqueeze(2))  # (batch, channels, length) → (batch, channels, 1, length)
        if self.norm is not None:
            y = self.norm(y)
        if self.relu is not None:
            y = self.relu(y)
        return y.squeeze(2)


def _convertible(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv1d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def conv1d_as_conv2d(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Conv1d layers are :class:`Conv1dAs2d` (same names, same outputs)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for index, (name, child) in enumerate(children):
            if not _convertible(child):
                continue
            following = [module for _, module in children[index + 1 : index + 3]]
            in_sequence = isinstance(parent, nn.Sequential)
            norm = following[0] if in_sequence and following and type(following[0]) is nn.BatchNorm1d else None
            after = following[1 if norm is not None else 0 :] if in_sequence else []
            relu = bool(after) and type(after[0]) is nn.ReLU
            setattr(parent, name, Conv1dAs2d(child, norm, relu))
            # the folded layers become identities; a Sequential keeps its indices
            for offset in range(1, 1 + (norm is not None) + relu):
                setattr(parent, children[index + offset][0], nn.Identity())
    return model


def _arguments(example: Any) -> tuple[tuple, dict]:
    if isinstance(example, dict):
        return (), dict(example)
    if isinstance(example, tuple | list):
        return tuple(example), {}
    return (example,), {}


def _batch_dynamic(example: Any) -> Any:
    args, named = _arguments(example)
    spec = {0: torch.export.Dim.AUTO}
    if named:
        return {key: spec if torch.is_tensor(value) and value.dim() else None for key, value in named.items()}
    return tuple(spec if torch.is_tensor(value) and value.dim() else None for value in args)


def export_program(model: nn.Module, example: Any) -> torch.export.ExportedProgram:
    """``torch.export`` with a dynamic batch; a model it cannot capture is refused with the operator named."""
    args, named = _arguments(example)
    try:
        with _quiet():
            return torch.export.export(model, args, named or None, dynamic_shapes=_batch_dynamic(example))
    except Exception as error:  # export raises many exception types, each naming the construct it cannot capture
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        raise ModelError(
            f"quantize (engine pt2e): torch.export cannot capture {type(model).__name__} "
            f"({type(error).__name__}: {first_line}); try engine: torch or engine: onnxruntime"
        ) from None


def _quantizer(x86: Any, float_layers: list[str], dynamic: bool, qat: bool) -> Any:
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(is_qat=qat, is_dynamic=dynamic))
    for name in float_layers:
        quantizer.set_module_name_qconfig(name, None)
    return quantizer


def _drop_unused(graph_module: nn.Module) -> nn.Module:
    """Delete the float weights the converted graph no longer reads (their int8 copies replaced them)."""
    used = {node.target for node in graph_module.graph.nodes if node.op == "get_attr"}
    for name, _ in list(graph_module.named_parameters()):
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            module = graph_module.get_submodule(owner) if owner else graph_module
            delattr(module, leaf)
    return graph_module


class PT2EModel(FrozenCompiled):
    """A converted PT2E graph, run compiled by inductor (int8 kernels); ``model`` is the reference graph.

    ``save_program`` writes the ``torch.export`` program (``.pt2``).
    """

    def __init__(self, graph: nn.Module, example: Any) -> None:
        from torchao.quantization.pt2e import allow_exported_model_train_eval

        allow_exported_model_train_eval(graph)  # callers (measurement) call .eval(); it changes nothing here
        super().__init__(graph, dynamic_batch=False)
        args, named = _arguments(example)
        object.__setattr__(self, "_example", (args, named))

    def save_program(self, path: str | Path) -> Path:
        """Write the program as ``.pt2``: ``torch.export.load(path).module()(inputs)`` runs it with torch alone."""
        args, named = self._example
        example = named or (args[0] if len(args) == 1 else args)
        program = export_program(self.model, example)
        program.example_inputs = None  # the calibration batch is not part of the artefact
        return atomic_write(Path(path), lambda handle: torch.export.save(program, handle))


def _prepared_graph(model: nn.Module, example: Any, train: bool) -> nn.Module:
    rewritten = conv1d_as_conv2d(model).train(train)
    return export_program(rewritten, example).module()


def static(model: nn.Module, batches: list[Any], float_layers: list[str]) -> PT2EModel:
    """Post-training static int8: activation ranges observed on ``batches``."""
    quantize_pt2e, x86 = _pt2e()
    graph = _prepared_graph(copy.deepcopy(model).cpu().eval(), batches[0], train=False)
    with _quiet():
        prepared = quantize_pt2e.prepare_pt2e(graph, _quantizer(x86, float_layers, dynamic=False, qat=False))
        with torch.no_grad():
            for batch in batches:
                call(prepared, batch)
        converted = quantize_pt2e.convert_pt2e(prepared)
    return PT2EModel(_drop_unused(converted), batches[0])


def dynamic(model: nn.Module, example: Any, float_layers: list[str]) -> tuple[PT2EModel, list[str]]:
    """Dynamic int8 (Linear layers: activation scales computed per call); the model and the layers left float."""
    quantize_pt2e, x86 = _pt2e()
    graph = _prepared_graph(copy.deepcopy(model).cpu().eval(), example, train=False)
    with _quiet():
        prepared = quantize_pt2e.prepare_pt2e(graph, _quantizer(x86, float_layers, dynamic=True, qat=False))
        with torch.no_grad():
            call(prepared, example)
        converted = quantize_pt2e.convert_pt2e(prepared)
    unsupported = [
        name
        for name, layer in weighted_layers(model).items()
        if not isinstance(layer, nn.Linear) and name not in float_layers
    ]
    return PT2EModel(_drop_unused(converted), example), unsupported


def prepare_qat(model: nn.Module, example: Any, float_layers: list[str]) -> nn.Module:
    """The exported graph with fake quantization (Conv+BatchNorm folding simulated), ready to train."""
    quantize_pt2e, x86 = _pt2e()
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    graph = _prepared_graph(copy.deepcopy(model).cpu(), example, train=True)
    with _quiet():
        prepared = quantize_pt2e.prepare_qat_pt2e(graph, _quantizer(x86, float_layers, dynamic=False, qat=True))
    allow_exported_model_train_eval(prepared)  # the training loop switches train/eval (BatchNorm statistics)
    return prepared


def convert_qat(trained: nn.Module, example: Any) -> PT2EModel:
    """The fine-tuned fake-quantized graph as a real int8 graph."""
    quantize_pt2e, _ = _pt2e()
    from torchao.quantization.pt2e import move_exported_model_to_eval

    with _quiet():
        graph = move_exported_model_to_eval(copy.deepcopy(trained).cpu())
        converted = quantize_pt2e.convert_pt2e(graph)
    return PT2EModel(_drop_unused(converted), example)
