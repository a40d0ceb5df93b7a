"""data.label_smoothing: classification trains on smoothed targets; a task without labels refuses it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import optiforge
from optiforge.errors import ConfigError
from optiforge.tasks import LogitFidelity
from optiforge.training.callbacks import Callback


class _CheckLoss(Callback):
    def __init__(self) -> None:
        self.gaps: list[float] = []

    def compute_loss(self, state, inputs, targets, outputs, loss):
        smoothed = F.cross_entropy(outputs.float(), targets, label_smoothing=0.2)
        plain = F.cross_entropy(outputs.float(), targets)
        assert torch.allclose(loss, smoothed)
        self.gaps.append(abs(smoothed.item() - plain.item()))
        return loss


def test_training_optimises_the_smoothed_cross_entropy(digits, one_thread):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16]), digits)
    check = _CheckLoss()
    config = optiforge.TrainConfig(epochs=1, optimizer={"name": "sgd", "lr": 0.1})
    smoothed = dataclasses.replace(digits, label_smoothing=0.2)
    optiforge.train(model, smoothed, config, callbacks=[check], progress=False)
    assert check.gaps and max(check.gaps) > 0.01  # the smoothed loss is not the plain one once outputs are confident


def test_a_task_without_labels_refuses_smoothing():
    task = LogitFidelity()
    with pytest.raises(ConfigError, match=r"data\.label_smoothing: 0\.1 needs class labels.*LogitFidelity"):
        task.training_loss(0.1)
    assert task.training_loss(0.0) == task.loss


@pytest.mark.parametrize("smoothing", [-0.1, 1.0])
def test_smoothing_outside_zero_to_one_is_refused(smoothing):
    with pytest.raises(ConfigError, match="label_smoothing"):
        optiforge.DataConfig(name="digits", label_smoothing=smoothing)


def test_the_data_section_carries_smoothing_to_training():
    assert optiforge.build_data(optiforge.DataConfig(name="digits", label_smoothing=0.1)).label_smoothing == 0.1
    assert optiforge.build_data(optiforge.DataConfig(name="digits")).label_smoothing == 0.0
