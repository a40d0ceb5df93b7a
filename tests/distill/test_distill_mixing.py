"""Input mixing: convex or cut-and-paste combinations, labels weighted to match."""

import pytest
import torch

from optiforge.distillation.config import MixConfig
from optiforge.distillation.mixing import mix_batch


def test_mixup_makes_convex_combinations_and_matching_soft_targets():
    torch.manual_seed(0)
    inputs = torch.eye(6).view(6, 1, 6)  # one-hot rows: each mixed row shows its two weights directly
    labels = torch.arange(6)
    mixed, targets = mix_batch(inputs, labels, MixConfig(kind="mixup"), num_classes=6)
    assert mixed.shape == inputs.shape and targets.shape == (6, 6)
    assert torch.allclose(targets.sum(dim=1), torch.ones(6))
    # with one-hot inputs and one-hot labels, the mixed input equals the soft target
    assert torch.allclose(mixed.view(6, 6), targets, atol=1e-6)
    assert (targets.max(dim=1).values < 1).any()  # something was actually mixed


def test_cutmix_on_signals_pastes_a_segment_and_labels_follow_the_pasted_share():
    torch.manual_seed(1)
    batch, length = 8, 40
    inputs = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1).expand(batch, 1, length).clone()
    labels = torch.arange(batch)
    mixed, targets = mix_batch(inputs, labels, MixConfig(kind="cutmix"), num_classes=batch)
    for row in range(batch):
        values = mixed[row, 0]
        own = (values == row).float().mean().item()
        # own label weight = share of own positions (at least: the partner may be the sample itself)
        assert targets[row, row].item() >= own - 1e-6
        others = set(values.unique().tolist()) - {float(row)}
        assert len(others) <= 1  # one partner per sample
        if others:
            # the pasted positions form one contiguous segment
            pasted = (values != row).nonzero().flatten()
            assert (pasted.diff() == 1).all()
            assert targets[row, int(others.pop())].item() == pytest.approx((values != row).float().mean().item())
    assert (mixed != inputs).any()


def test_cutmix_on_images_pastes_a_box():
    torch.manual_seed(2)
    inputs = torch.zeros(4, 1, 8, 8)
    inputs[2:] = 1.0
    mixed, targets = mix_batch(inputs, torch.tensor([0, 0, 1, 1]), MixConfig(kind="cutmix"), num_classes=2)
    for row in range(4):
        changed = (mixed[row, 0] != inputs[row, 0]).nonzero()
        if len(changed):
            rows, cols = changed[:, 0], changed[:, 1]
            box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            assert box.item() == len(changed)  # a filled rectangle
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))


def test_no_mixing_and_probability_zero_leave_the_batch_alone():
    inputs, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    same_inputs, same_labels = mix_batch(inputs, labels, MixConfig(kind="none"), num_classes=3)
    assert same_inputs is inputs and same_labels is labels
    mixed, targets = mix_batch(inputs, labels, MixConfig(kind="mixup", probability=0.0), num_classes=3)
    assert torch.equal(mixed, inputs)
    assert torch.equal(targets.argmax(dim=1), labels) and torch.equal(targets.max(dim=1).values, torch.ones(5))


def test_integer_inputs_such_as_token_ids_are_not_mixed():
    ids = torch.randint(0, 100, (4, 7))
    labels = torch.tensor([0, 1, 0, 1])
    assert mix_batch(ids, labels, MixConfig(kind="mixup"), num_classes=2)[0] is ids
