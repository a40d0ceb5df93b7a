"""The checks every compression verb makes before it returns: the result runs, the caller's model survives a failure."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from optiforge.errors import ModelError
from optiforge.layers import locate_failure


def example_for(example_inputs: Any, data: Any) -> Any:
    """The input a verb checks its result on: ``example_inputs``, else two of ``data``'s test inputs, else None."""
    if example_inputs is not None:
        return example_inputs
    if data is not None:
        return data.example_input(2)
    return None


def to_device(example_inputs: Any, model: nn.Module) -> Any:
    """``example_inputs`` on the device of the model's first parameter."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return example_inputs
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs.to(parameter.device)
    if isinstance(example_inputs, dict):
        return {key: value.to(parameter.device) for key, value in example_inputs.items()}
    if isinstance(example_inputs, tuple):
        return tuple(v.to(parameter.device) if isinstance(v, torch.Tensor) else v for v in example_inputs)
    return example_inputs


def run_example(model: nn.Module, example_inputs: Any) -> Any:
    """The model's output on ``example_inputs`` (a tensor, a tuple of positional inputs or a dict of keywords)."""
    with torch.no_grad():
        if isinstance(example_inputs, dict):
            return model(**example_inputs)
        if isinstance(example_inputs, tuple):
            return model(*example_inputs)
        return model(example_inputs)


def failing_layer(model: nn.Module, example_inputs: Any) -> tuple[str, Exception] | None:
    """``(layer, error)`` where a forward pass on ``example_inputs`` fails, else None.

    The layer is the innermost one still running; ``""`` when the failure is in the model's own forward.
    """
    return locate_failure(model, lambda: run_example(model, to_device(example_inputs, model)))


def check_result(model: nn.Module, example_inputs: Any, verb: str) -> None:
    """Refuse a result that fails on ``example_inputs``, naming the layer; no input, no check."""
    if example_inputs is None:
        return
    failure = failing_layer(model, example_inputs)
    if failure is None:
        return
    layer, error = failure
    where = f"layer '{layer}'" if layer else type(model).__name__
    message = str(error).splitlines()[0] if str(error) else ""
    raise ModelError(
        f"{verb} produced a model that fails in {where} ({type(error).__name__}: {message}); "
        "the model given was left as it was; leave that layer out with layers.exclude"
    )


class Snapshot:
    """The parameters, buffers and attributes of every module, to put back when a verb fails half-way."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = list(model.modules())
        self.children = [dict(module.__dict__["_modules"]) for module in self.modules]
        self.copy = copy.deepcopy(model)

    def restore(self) -> None:
        """Give every module back what it held when the snapshot was taken (again after each restore)."""
        fresh = copy.deepcopy(self.copy)  # a verb may change in place what a restore handed back
        for module, source, children in zip(self.modules, fresh.modules(), self.children, strict=True):
            state = {key: value for key, value in source.__dict__.items() if key != "_modules"}
            module.__dict__.clear()
            module.__dict__.update(state)
            module.__dict__["_modules"] = dict(children)


@contextlib.contextmanager
def rollback_on_failure(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Give ``model`` back as it was if the block raises (a verb that fails never breaks the caller's model)."""
    snapshot = Snapshot(model) if enabled else None
    try:
        yield
    except BaseException:
        if snapshot is not None:
            snapshot.restore()
        raise
