"""``torch.compile`` for inference: inductor with frozen weights, a dynamic batch, a fallback that says why.

Freezing (``torch._inductor.config.freezing``) lets inductor treat weights as
constants: it folds them, prepacks them for oneDNN and, on a PT2E int8 graph,
replaces quantize/dequantize patterns by int8 convolution and matmul kernels.
It is only valid without gradients, so every call runs under ``no_grad``.
The batch dimension is marked dynamic (a batch of 1 still gets its own
specialised graph: PyTorch specialises sizes 0 and 1).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger("optiforge")


def _batch_dynamic(value: Any) -> Any:
    """A view of ``value`` with its batch dimension marked dynamic.

    The mark sticks to the tensor object; marking a view leaves the caller's tensor unmarked (a marked
    tensor handed later to a graph compiled per batch size would make that graph symbolic).
    """
    if not (torch.is_tensor(value) and value.dim() > 0):
        return value
    view = value.view(value.shape)
    torch._dynamo.maybe_mark_dynamic(view, 0)
    return view


class FrozenCompiled(nn.Module):
    """``model`` compiled by inductor with frozen weights; holds the eager model as ``model`` (its state dict).

    Compilation happens at the first call (with ``dynamic_batch``, one graph serves every batch size above 1;
    without, each batch size compiles once). When it fails, the model runs eagerly from
    then on and ``fallback`` says why (logged once).
    """

    def __init__(self, model: nn.Module, dynamic_batch: bool = True) -> None:
        super().__init__()
        model.eval()  # not chained: an exported graph's eval() may return None
        self.model = model
        self.dynamic_batch = dynamic_batch
        self.fallback: str | None = None
        compiled = torch.compile(self.model, backend="inductor", dynamic=None if dynamic_batch else False)
        object.__setattr__(self, "_compiled", compiled)  # not a submodule: the state dict stays the eager model's

    def forward(self, *inputs: Any, **named: Any) -> Any:
        if self.fallback is not None:
            return self.model(*inputs, **named)
        if self.dynamic_batch:
            inputs = tuple(_batch_dynamic(value) for value in inputs)
            named = {key: _batch_dynamic(value) for key, value in named.items()}
        try:
            with torch.no_grad(), torch._inductor.config.patch(freezing=True), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return self._compiled(*inputs, **named)
        except Exception as error:  # dynamo and inductor fail in many ways; the eager model always runs
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            self.fallback = (
                f"torch.compile cannot compile {type(self.model).__name__} "
                f"({type(error).__name__}: {first_line}); it runs eagerly instead"
            )
            log.warning("%s", self.fallback)
            return self.model(*inputs, **named)


@dataclass
class CompiledInference:
    """What :func:`compile_for_inference` made: the model to run, whether it compiled, and the time it took."""

    model: nn.Module
    compiled: bool
    compile_seconds: float | None
    fallback: str | None = None


def _call(model: nn.Module, batch: Any) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(*batch)
    return model(batch)


def compile_for_inference(model: nn.Module, examples: Iterable[Any]) -> CompiledInference:
    """Compile ``model`` for inference and run it once on each of ``examples`` (each shape compiles once).

    ``compile_seconds`` is the time of those first calls (compilation, apart from the run time measured
    later). A model inductor cannot compile keeps running eagerly; ``fallback`` says why.
    """
    compiled = model if isinstance(model, FrozenCompiled) else FrozenCompiled(model)
    started = time.perf_counter()
    with torch.no_grad():
        for batch in examples:
            _call(compiled, batch)
    seconds = time.perf_counter() - started
    if compiled.fallback is not None:
        return CompiledInference(compiled.model, False, None, compiled.fallback)
    return CompiledInference(compiled, True, seconds)


def eager_of(model: nn.Module) -> nn.Module:
    """The eager module behind ``torch.compile``'s wrapper (training may hand one over), else ``model``."""
    return getattr(model, "_orig_mod", model)
