"""Fidelity when the targets are a float reference model's logits: top-1 agreement is the task metric."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optiforge.errors import ConfigError
from optiforge.quantization import QuantConfig, quantize_with_result
from optiforge.quantization.fidelity import compare, float_outputs, labels_of


def _reference_and_batches() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    inputs = [torch.randn(40, 16) for _ in range(3)]
    with torch.no_grad():
        return reference, [(batch, reference(batch)) for batch in inputs]


def test_logit_targets_give_agreement_with_the_reference_as_accuracy():
    reference, batches = _reference_and_batches()
    perturbed = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    perturbed.load_state_dict(reference.state_dict())
    with torch.no_grad():
        perturbed[2].weight.add_(0.3 * torch.randn_like(perturbed[2].weight))
        inputs = torch.cat([batch for batch, _ in batches])
        expected = (perturbed(inputs).argmax(1) == reference(inputs).argmax(1)).float().mean().item()
    assert 0.3 < expected < 1.0  # the perturbation changes some classes, not all
    measured = compare(perturbed, batches, float_outputs(reference, batches))
    assert measured.agreement == pytest.approx(expected)
    assert measured.accuracy == pytest.approx(expected) and measured.float_accuracy == 1.0
    assert measured.metric_drop == pytest.approx(1.0 - expected)


def test_targets_that_are_not_class_scores_give_no_labels():
    inputs = torch.randn(4, 16)
    assert labels_of((inputs, torch.randn(4, 1))) is None  # one regression output
    assert labels_of((inputs, torch.randn(4))) is None
    assert labels_of(inputs) is None
    assert labels_of((inputs, torch.tensor([[0.1, 2.0], [3.0, 0.0], [0.0, 0.5], [1.0, 0.9]]))).tolist() == [1, 0, 1, 0]


def test_max_metric_drop_is_met_on_logit_targets():
    reference, batches = _reference_and_batches()
    config = QuantConfig(scheme="int8_dynamic", engine="torch", target={"max_metric_drop": 0.05})
    result = quantize_with_result(reference, config, validation=batches)
    with torch.no_grad():  # batch by batch: dynamic int8 scales each batch's activations by its own range
        same = [(result.model(batch).argmax(1) == targets.argmax(1)).float() for batch, targets in batches]
    kept = torch.cat(same).mean().item()
    assert result.target_met and result.fidelity.agreement == pytest.approx(kept)
    assert result.fidelity.metric_drop == pytest.approx(1.0 - kept) and 1.0 - kept <= 0.05


def test_max_metric_drop_still_needs_targets():
    reference, batches = _reference_and_batches()
    config = QuantConfig(scheme="int8_dynamic", engine="torch", target={"max_metric_drop": 0.05})
    with pytest.raises(ConfigError, match="max_metric_drop needs validation batches with labels"):
        quantize_with_result(reference, config, validation=[batch for batch, _ in batches])
