"""A forward pass that fails is pinned to the innermost layer still running, and no hook is left behind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optiforge.compress.checks import check_result
from optiforge.errors import ModelError
from optiforge.layers import locate_failure


class Broken(nn.Module):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise ValueError("broken on purpose")


class FailsOutsideLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.fc(inputs).view(3, -1)  # fails after fc returned


def _hook_count(model: nn.Module) -> int:
    return sum(len(module._forward_hooks) + len(module._forward_pre_hooks) for module in model.modules())


def test_the_innermost_running_layer_is_named_and_hooks_are_removed():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), Broken()), nn.Linear(4, 2))
    layer, error = locate_failure(model, lambda: model(torch.ones(2, 4)))
    assert layer == "1.1" and isinstance(error, ValueError)
    assert _hook_count(model) == 0


def test_a_failure_in_the_models_own_forward_names_no_layer():
    model = FailsOutsideLayers()
    layer, error = locate_failure(model, lambda: model(torch.ones(2, 4)))
    assert layer == "" and isinstance(error, RuntimeError)


def test_a_forward_that_runs_gives_none():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert locate_failure(model, lambda: model(torch.ones(2, 4))) is None
    assert _hook_count(model) == 0


def test_a_compression_result_that_fails_is_refused_naming_the_layer():
    model = nn.Sequential(nn.Linear(4, 4), Broken())
    with pytest.raises(ModelError, match=r"prune produced a model that fails in layer '1' \(ValueError: broken"):
        check_result(model, torch.ones(2, 4), "prune")
