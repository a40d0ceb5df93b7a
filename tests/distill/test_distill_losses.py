"""Each loss behaves as its formula says."""

import math

import pytest
import torch
import torch.nn.functional as F

from optiforge.distillation.losses import (
    cosine_loss,
    embedding_loss,
    logit_mse_loss,
    mean_pool,
    output_loss,
    soft_target_loss,
)


def test_soft_target_loss_is_kl_of_softened_distributions_times_t_squared():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    temperature = 3.0
    p_teacher = F.softmax(teacher / temperature, dim=1)
    p_student = F.softmax(student / temperature, dim=1)
    by_hand = (p_teacher * (p_teacher.log() - p_student.log())).sum(dim=1).mean() * temperature**2
    assert soft_target_loss(student, teacher, temperature).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_soft_target_loss_is_zero_only_when_distributions_agree():
    logits = torch.randn(3, 4)
    assert soft_target_loss(logits, logits, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_target_loss(logits + 5.0, logits, 2.0).item() == pytest.approx(0.0, abs=1e-5)  # shift-invariant
    assert soft_target_loss(-logits, logits, 2.0).item() > 0.01


def test_soft_target_gradient_scale_does_not_vanish_with_temperature():
    # the T² factor keeps gradient magnitudes comparable across temperatures (Hinton et al.)
    torch.manual_seed(0)
    teacher = torch.randn(8, 10)
    norms = []
    for temperature in (4.0, 16.0):
        student = torch.zeros(8, 10, requires_grad=True)
        soft_target_loss(student, teacher, temperature).backward()
        norms.append(student.grad.norm().item())
    # without the factor the gradient would shrink 16-fold from T=4 to T=16; with it, it stays put
    assert norms[1] == pytest.approx(norms[0], rel=0.1)


def test_logit_mse_is_mean_squared_difference():
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    assert logit_mse_loss(student, teacher).item() == pytest.approx((1 + 4 + 0 + 4) / 4)


def test_cosine_loss_is_zero_for_parallel_one_for_orthogonal_two_for_opposite():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    per_row = [cosine_loss(a[i : i + 1], b[i : i + 1]).item() for i in range(3)]
    assert per_row == pytest.approx([0.0, 1.0, 2.0], abs=1e-6)
    assert cosine_loss(a, b).item() == pytest.approx(1.0)
    assert embedding_loss(a, b, "cosine").item() == pytest.approx(1.0)
    assert embedding_loss(a, b, "mse").item() == pytest.approx(F.mse_loss(a, b).item())


def test_mean_pool_ignores_padding_tokens():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])  # (B=1, T=3, H=2)
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 2.0]]
    assert mean_pool(hidden)[0].tolist() == pytest.approx([104 / 3, 104 / 3])


def test_output_loss_dispatches_by_kind():
    student, teacher = torch.randn(2, 3), torch.randn(2, 3)
    expected_kl = soft_target_loss(student, teacher, 2.0).item()
    assert output_loss(student, teacher, "kl", 2.0).item() == pytest.approx(expected_kl)
    assert output_loss(student, teacher, "mse", 2.0).item() == pytest.approx(logit_mse_loss(student, teacher).item())
    assert output_loss(student, teacher, "cosine", 2.0).item() == pytest.approx(cosine_loss(student, teacher).item())
    assert math.isfinite(output_loss(student, teacher, "kl", 0.5).item())
