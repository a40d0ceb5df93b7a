"""Optimizers by name and learning-rate schedules with warm-up."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import optiforge
from optiforge.config import OptimizerConfig, ScheduleConfig
from optiforge.errors import ConfigError
from optiforge.training.muon import NEWTON_SCHULZ, orthogonalize
from optiforge.training.optimizers import MuonWithAdamW, build_optimizer, optimizer_names
from optiforge.training.schedules import Schedule


def _loss_after_steps(model, optimizer, steps=30):
    torch.manual_seed(0)
    inputs, targets = torch.randn(64, 8), torch.randint(0, 3, (64,))
    first = None
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return first, loss.item()


@pytest.mark.parametrize(
    ("name", "lr"),
    [
        ("gd", 0.5),
        ("sgd", 0.5),
        ("adam", 0.01),
        ("adamw", 0.01),
        ("rmsprop", 0.01),
        ("adagrad", 0.1),
        ("adafactor", 0.01),
        ("muon", 0.02),
        ("NAdam", 0.01),
        ("radam", 0.1),
    ],
)
def test_every_named_optimizer_reduces_the_loss(name, lr):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = build_optimizer(model, OptimizerConfig(name=name, lr=lr))
    first, last = _loss_after_steps(model, optimizer)
    assert last < first * 0.9


def test_sgd_options_reach_torch():
    model = nn.Linear(4, 2)
    optimizer = build_optimizer(
        model, OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    )
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)


def test_muon_splits_hidden_matrices_from_the_rest():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = build_optimizer(model, OptimizerConfig(name="muon", lr=0.02))
    assert isinstance(optimizer, MuonWithAdamW)
    muon, adamw = optimizer.inner
    assert [p.shape for g in muon.param_groups for p in g["params"]] == [torch.Size([16, 8])]
    assert len([p for g in adamw.param_groups for p in g["params"]]) == 3
    restored = build_optimizer(model, OptimizerConfig(name="muon", lr=0.02))
    _loss_after_steps(model, optimizer, steps=2)
    restored.load_state_dict(optimizer.state_dict())
    assert restored.inner[0].state_dict()["state"].keys() == muon.state_dict()["state"].keys()


def test_unknown_optimizer_and_option_are_named():
    model = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="unknown optimizer 'adamm'.*did you mean 'adam'"):
        build_optimizer(model, OptimizerConfig(name="adamm"))
    with pytest.raises(ConfigError, match="Adam has no 'momentum' option"):
        build_optimizer(model, OptimizerConfig(name="adam", momentum=0.9))
    with pytest.raises(ConfigError, match="options.amsgrd.*did you mean 'amsgrad'"):
        build_optimizer(model, OptimizerConfig(name="adam", options={"amsgrd": True}))
    assert {"gd", "sgd", "adam", "adamw", "rmsprop", "adagrad", "adafactor", "muon", "lbfgs"} <= set(optimizer_names())


def _lrs(config: ScheduleConfig, epochs=10, steps_per_epoch=10, lr=1.0):
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr)
    schedule = Schedule(optimizer, config, epochs, steps_per_epoch)
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(epochs * steps_per_epoch):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_linear_warmup_then_cosine_to_min_lr():
    rates = _lrs(ScheduleConfig(name="cosine", warmup_epochs=2, min_lr=0.01))
    warmup = rates[:21]
    assert warmup[0] < 0.01 and all(b > a for a, b in zip(warmup, warmup[1:], strict=False))
    assert math.isclose(rates[20], 1.0, rel_tol=1e-6)
    assert math.isclose(rates[-1], 0.01, rel_tol=1e-3)


def test_step_multistep_exponential_constant():
    step = _lrs(ScheduleConfig(name="step", step_epochs=4, gamma=0.5))
    assert step[39] == 1.0 and step[40] == 0.5 and step[80] == 0.25
    multi = _lrs(ScheduleConfig(name="multistep", milestones=[3, 7], gamma=0.1))
    assert math.isclose(multi[31], 0.1) and math.isclose(multi[71], 0.01)
    exponential = _lrs(ScheduleConfig(name="exponential", gamma=0.5))
    assert math.isclose(exponential[10], 0.5, rel_tol=1e-6)
    assert set(_lrs(ScheduleConfig())) == {1.0}


def test_onecycle_rises_then_falls():
    rates = _lrs(ScheduleConfig(name="onecycle"))
    peak = rates.index(max(rates))
    assert 0 < peak < len(rates) - 1 and rates[0] < max(rates) and rates[-1] < rates[0]


def test_plateau_reduces_after_patience():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    schedule = Schedule(optimizer, ScheduleConfig(name="plateau", patience=1, gamma=0.5), 10, 5)
    for metric in (0.5, 0.5, 0.5):
        schedule.epoch_end(metric)
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_full_batch_gradient_descent_uses_one_step_per_epoch(digits, small_mlp):
    seen = []

    class Count(optiforge.Callback):
        def after_optimizer_step(self, state):
            seen.append(state.step)

    optiforge.train(
        small_mlp,
        digits,
        optiforge.TrainConfig(optimizer={"name": "gd", "lr": 0.5}, epochs=3),
        callbacks=[Count()],
        progress=False,
    )
    assert seen == [1, 2, 3]


def _conv_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv1d(16, 12, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12 * 10, 3),
    )


def test_muon_orthogonalises_convolution_filters_and_leaves_first_layer_and_head_to_adamw():
    model = _conv_net()
    optimizer = build_optimizer(model, OptimizerConfig(name="muon", lr=0.01, momentum=0.9))
    muon, adamw = optimizer.inner
    hidden = [model[2].weight, model[4].weight]
    assert [p for g in muon.param_groups for p in g["params"]] == hidden
    assert {id(p) for g in adamw.param_groups for p in g["params"]} == {
        id(p) for p in model.parameters() if all(p is not w for w in hidden)
    }
    before = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(1)
    inputs, targets = torch.randn(32, 1, 10), torch.randint(0, 3, (32,))
    nn.functional.cross_entropy(model(inputs), targets).backward()
    gradients = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    for weight in hidden:
        index = next(i for i, p in enumerate(model.parameters()) if p is weight)
        update = (before[index] - weight.detach()).reshape(weight.shape[0], -1)
        gradient = gradients[index].reshape(weight.shape[0], -1)
        # Muon's step has all singular values near one (times the rate); the raw gradient's spread widely
        update_values = torch.linalg.svdvals(update)
        gradient_values = torch.linalg.svdvals(gradient)
        assert update_values.max() / update_values.min() < 2.5
        assert gradient_values.max() / gradient_values.min() > 5 * (update_values.max() / update_values.min())
        assert update_values.max() == pytest.approx(0.01 * 0.2 * max(update.shape) ** 0.5, rel=0.3)
    # AdamW's first step moves every other weight by the rate, elementwise
    first_step = (before[0] - model[0].weight.detach()).abs()
    assert torch.allclose(first_step[gradients[0] != 0], torch.tensor(0.01), rtol=1e-3)
    assert set(adamw.state) == {p for p in model.parameters() if all(p is not w for w in hidden)}


def test_muon_on_a_model_without_hidden_weights_is_refused_by_name():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 8, 3))
    with pytest.raises(ConfigError, match="'muon' needs a hidden nn.Linear .* or a convolution after the first.*adamw"):
        build_optimizer(model, OptimizerConfig(name="muon", lr=0.02))


@pytest.mark.parametrize("shape", [(16, 80), (80, 16), (24, 30)])
def test_orthogonalize_on_the_short_side_matches_the_newton_schulz_steps(shape):
    torch.manual_seed(0)
    # a gradient-like matrix: a few strong directions over weak noise
    matrix = torch.randn(shape[0], 3) @ torch.randn(3, shape[1]) * 10 + torch.randn(shape) * 0.01
    a, b, c = NEWTON_SCHULZ
    x = matrix.T if shape[0] > shape[1] else matrix
    x = x / x.norm()
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    expected = x.T if shape[0] > shape[1] else x
    result = orthogonalize(matrix)
    assert torch.allclose(result, expected, atol=1e-4)
    strong = torch.linalg.svdvals(result)[:3]
    assert torch.all((strong > 0.6) & (strong < 1.2))


def test_muon_options_reach_the_optimizer_and_unknown_ones_are_named():
    model = _conv_net()
    optimizer = build_optimizer(model, OptimizerConfig(name="muon", lr=0.02, options={"newton_schulz_steps": 3}))
    assert optimizer.inner[0].param_groups[0]["newton_schulz_steps"] == 3
    with pytest.raises(ConfigError, match="options.newton_shulz_steps: muon has no such option.*newton_schulz_steps"):
        build_optimizer(model, OptimizerConfig(name="muon", lr=0.02, options={"newton_shulz_steps": 3}))
    with pytest.raises(ConfigError, match="Muon refused the options: newton_schulz_steps must be a whole number >= 1"):
        build_optimizer(model, OptimizerConfig(name="muon", lr=0.02, options={"newton_schulz_steps": 0}))
