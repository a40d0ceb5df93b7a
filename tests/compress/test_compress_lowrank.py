"""Low-rank factorisation: smaller layers only where that saves parameters, equal to the SVD approximation."""

import pytest
import torch
from torch import nn

from optiforge.compress import FactorizeConfig, factorize
from optiforge.compress.lowrank import choose_rank
from optiforge.errors import ConfigError


def test_linear_layer_is_replaced_by_two_smaller_ones_equal_to_the_truncated_svd():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    weight = model[0].weight.detach().clone()
    inputs = torch.randn(16, 64)
    factorize(model, FactorizeConfig(rank_ratio=0.25))
    first, second = model[0]
    assert (first.out_features, second.in_features) == (16, 16)
    u, s, vh = torch.linalg.svd(weight.double())
    approximation = (u[:, :16] * s[:16]) @ vh[:16]
    assert torch.allclose(second.weight.double() @ first.weight.double(), approximation, atol=1e-5)
    assert isinstance(model[2], nn.Linear)  # the classifier is kept by default
    assert model(inputs).shape == (16, 10)


def test_a_low_rank_matrix_is_reproduced_exactly():
    torch.manual_seed(0)
    layer = nn.Linear(40, 30)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(30, 3) @ torch.randn(3, 40))
    model = nn.Sequential(layer, nn.Linear(30, 2))
    inputs = torch.randn(8, 40)
    expected = model(inputs)
    factorize(model, FactorizeConfig(energy=0.999999))
    assert model[0][0].out_features == 3
    assert torch.allclose(model(inputs), expected, atol=1e-5)


def test_layers_are_kept_where_factorising_saves_nothing():
    model = nn.Sequential(nn.Linear(64, 4), nn.Linear(4, 2))
    factorize(model, FactorizeConfig(rank_ratio=0.9))
    assert isinstance(model[0], nn.Linear)


def test_convolutions_are_factorised_by_reshaping():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(16, 32, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 20, 10))
    inputs = torch.randn(4, 16, 20)
    weight = model[0].weight.detach().flatten(1).double()
    u, s, vh = torch.linalg.svd(weight)
    reference = nn.Conv1d(16, 32, 5, padding=2)
    with torch.no_grad():
        reference.weight.copy_(((u[:, :8] * s[:8]) @ vh[:8]).view(32, 16, 5))
        reference.bias.copy_(model[0].bias)
    factorize(model, FactorizeConfig(rank_ratio=0.25))
    first, second = model[0]
    assert isinstance(first, nn.Conv1d) and first.out_channels == 8 and second.kernel_size == (1,)
    assert torch.allclose(model[0](inputs), reference(inputs), atol=1e-5)


def test_full_rank_conv_factorisation_matches_the_original():
    torch.manual_seed(0)
    conv = nn.Conv1d(2, 40, 3, padding=1)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(40 * 8, 2))
    inputs = torch.randn(3, 2, 8)
    expected = model(inputs)
    factorize(model, FactorizeConfig(energy=0.9999999))  # rank 6 of a 40x6 kernel matrix: no saving
    assert isinstance(model[0], nn.Conv1d)
    conv2 = nn.Sequential(nn.Conv1d(40, 40, 3, padding=1), nn.Flatten(), nn.Linear(40 * 8, 2))
    with torch.no_grad():
        conv2[0].weight.copy_((torch.randn(40, 2) @ torch.randn(2, 120)).view(40, 40, 3))
    inputs = torch.randn(3, 40, 8)
    expected = conv2(inputs)
    factorize(conv2, FactorizeConfig(energy=0.999999))
    assert conv2[0][0].out_channels == 2
    assert torch.allclose(conv2(inputs), expected, atol=1e-4)


def test_rank_rules_and_bad_values():
    values = torch.tensor([4.0, 2.0, 1.0, 0.0])
    assert choose_rank(values, FactorizeConfig(rank_ratio=0.5)) == 2
    assert choose_rank(values, FactorizeConfig(energy=0.75)) == 1  # 16 of 21 is 0.76 of the energy
    assert choose_rank(values, FactorizeConfig(energy=0.9)) == 2  # 20 of 21
    assert choose_rank(values, FactorizeConfig(energy=0.96)) == 3
    with pytest.raises(ConfigError, match="exactly one"):
        FactorizeConfig()
    with pytest.raises(ConfigError, match="in \\(0, 1\\)"):
        FactorizeConfig(rank_ratio=1.5)
