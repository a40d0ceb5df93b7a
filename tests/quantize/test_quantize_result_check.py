"""An engine's quantized model that fails on the example input is refused, naming the layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optiforge.errors import ModelError
from optiforge.quantization.result_check import check_quantized


class Broken(nn.Module):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no kernel for this dtype\nsecond line")


def test_a_failing_quantized_model_is_refused_with_the_layer_and_the_first_line_of_the_error():
    model = nn.Sequential(nn.Linear(4, 4), Broken())
    with pytest.raises(ModelError) as raised:
        check_quantized(model, torch.ones(2, 4), "int8_static", "torch")
    message = str(raised.value)
    assert "quantize (int8_static, engine torch) produced a model that fails in layer '1'" in message
    assert "(RuntimeError: no kernel for this dtype)" in message and "second line" not in message


def test_a_quantized_model_that_runs_passes():
    check_quantized(nn.Sequential(nn.Linear(4, 4)), torch.ones(2, 4), "int8_dynamic", "torch")
