"""The quantize stage on data whose targets are a float model's logits: top-1 agreement is the metric."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import optiforge
from optiforge.data.builtin import TaskData
from optiforge.quantization import QuantConfig
from optiforge.stages import STAGES
from optiforge.stages.base import StageContext
from optiforge.tasks import task_for


def _logit_data() -> tuple[nn.Module, TaskData]:
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    splits = []
    for count in (64, 120, 40):
        inputs = torch.randn(count, 16)
        with torch.no_grad():
            splits.append(TensorDataset(inputs, reference(inputs)))
    return reference, TaskData(*splits, input_shape=(16,), num_classes=5, task="logit_fidelity", name="logits")


def _context(data: TaskData, folder) -> StageContext:
    return StageContext(
        data=data,
        task=task_for(data.task),
        hardware=optiforge.HardwareConfig(),
        train_config=optiforge.TrainConfig(batch_size=32),
        stage_dir=folder,
        run_dir=folder,
    )


def _agreement(model: nn.Module, reference: nn.Module, inputs: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(inputs).argmax(1) == reference(inputs).argmax(1)).float().mean().item()


def test_quantize_stage_reports_agreement_with_the_float_model_on_logit_targets(tmp_path):
    reference, data = _logit_data()
    config = QuantConfig(scheme="int8_static", engine="torch", target={"min_fidelity": 0.5})
    output = STAGES.get("quantize").apply(reference, config, _context(data, tmp_path))
    inputs = data.val.tensors[0]
    assert output.info["agreement"] == pytest.approx(_agreement(output.model, reference, inputs))
    assert 0.5 < output.info["agreement"] <= 1.0


def test_max_metric_drop_bounds_the_loss_of_agreement_on_logit_targets(tmp_path):
    reference, data = _logit_data()
    config = QuantConfig(scheme="int8_static", engine="torch", target={"max_metric_drop": 0.05})
    output = STAGES.get("quantize").apply(reference, config, _context(data, tmp_path))
    assert not output.info["baseline_kept"]
    assert output.info["agreement"] == pytest.approx(_agreement(output.model, reference, data.val.tensors[0]))
    assert output.info["agreement"] >= 0.95


def test_openvino_accuracy_control_keeps_agreement_on_logit_targets(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    nncf = pytest.importorskip("nncf")
    calls: list[float] = []
    real = nncf.quantize_with_accuracy_control

    def spy(model, calibration, validation, validation_fn, **kwargs):
        calls.append(kwargs["max_drop"])
        return real(model, calibration, validation, validation_fn=validation_fn, **kwargs)

    monkeypatch.setattr(nncf, "quantize_with_accuracy_control", spy)
    reference, data = _logit_data()
    config = QuantConfig(scheme="int8_static", engine="openvino", target={"max_metric_drop": 0.01})
    output = STAGES.get("quantize").apply(reference, config, _context(data, tmp_path))
    assert calls == [0.01] and not output.info["baseline_kept"]
    assert output.info["agreement"] == pytest.approx(_agreement(output.model, reference, data.val.tensors[0]))
    assert output.info["agreement"] >= 0.99
