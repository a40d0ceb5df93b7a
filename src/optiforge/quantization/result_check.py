"""A quantized model runs on an example input before it is returned, or the engine's attempt is refused by name."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optiforge.errors import ModelError
from optiforge.layers import locate_failure
from optiforge.quantization.calibration import call, model_inputs


def check_quantized(model: nn.Module, example: Any, scheme: str, engine: str) -> None:
    """Run ``model`` once on ``example``; a failure is a :class:`ModelError` naming the layer it happened in."""

    def forward() -> None:
        with torch.no_grad():
            call(model, model_inputs(example))

    failure = locate_failure(model, forward)
    if failure is None:
        return
    layer, error = failure  # the engine's result is broken: refuse it rather than return it
    where = f"layer '{layer}'" if layer else type(model).__name__
    message = str(error).splitlines()[0] if str(error) else ""
    raise ModelError(
        f"quantize ({scheme}, engine {engine}) produced a model that fails in {where} "
        f"({type(error).__name__}: {message}); keep that layer float with layers.exclude"
    )
