"""Weight sharing: each layer takes k values, zeros stay zero, shared values are trained."""

import pytest
import torch
from torch import nn

import optiforge
from optiforge.compress import PruneConfig, ShareConfig, prune, share
from optiforge.compress.sharing import ShareCallback, cluster_tensor
from optiforge.errors import ConfigError


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


def test_each_layer_takes_exactly_k_distinct_values():
    model = share(_mlp(), ShareConfig(clusters=8))
    for layer in (model[1], model[3]):
        assert torch.unique(layer.weight).numel() == 8
    assert torch.unique(model[1].bias).numel() == 48  # biases untouched by default


def test_include_bias_clusters_biases_too():
    model = share(_mlp(), ShareConfig(clusters=4, include_bias=True))
    assert torch.unique(model[1].bias).numel() == 4


def test_linear_initialisation_spans_the_weight_range():
    weight = torch.linspace(-1.0, 1.0, 1000)
    indices = cluster_tensor(weight, 5, "linear")
    centroids = torch.unique(weight)
    assert centroids.numel() == 5 and centroids.min() < -0.7 and centroids.max() > 0.7
    assert torch.all(indices >= 0)


def test_sharing_after_pruning_keeps_zeros_zero():
    model = prune(_mlp(), PruneConfig(sparsity=0.8))
    zero_before = [layer.weight == 0 for layer in (model[1], model[3])]
    share(model, ShareConfig(clusters=4))
    for layer, zero in zip((model[1], model[3]), zero_before, strict=True):
        assert torch.equal(layer.weight == 0, zero)
        assert torch.unique(layer.weight[layer.weight != 0]).numel() == 4


def test_clusters_below_two_are_refused():
    with pytest.raises(ConfigError, match="at least 2"):
        ShareConfig(clusters=1)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients():
    weight = nn.Parameter(torch.tensor([1.0, 1.0, 2.0, 0.0]))
    indices = torch.tensor([0, 0, 1, -1])
    callback = ShareCallback({"w": weight}, {"w": indices}, clusters=2)
    weight.grad = torch.tensor([0.5, 0.25, 1.0, 3.0])
    callback.before_optimizer_step(None)
    assert torch.equal(weight.grad, torch.tensor([0.75, 0.75, 1.0, 0.0]))


def test_finetuning_trains_the_shared_values_and_keeps_them_shared():
    data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    model = _mlp()
    optiforge.train(model, data, optiforge.TrainConfig(epochs=2), progress=False)
    prune(model, PruneConfig(sparsity=0.5))
    zero = model[1].weight == 0
    reference = share(_copy(model), ShareConfig(clusters=8))
    settings = optiforge.TrainConfig(optimizer={"name": "sgd", "lr": 0.002, "momentum": 0.9})
    model = share(model, ShareConfig(clusters=8, finetune={"epochs": 2}), data, train_config=settings)
    for layer, before in ((model[1], reference[1]), (model[3], reference[3])):
        values = torch.unique(layer.weight[layer.weight != 0])
        assert values.numel() == 8
        assert not torch.equal(values, torch.unique(before.weight[before.weight != 0]))  # trained
    assert torch.equal(model[1].weight == 0, zero)
    assert optiforge.measure(model, data).value > 0.5


def _copy(model):
    import copy

    return copy.deepcopy(model)
