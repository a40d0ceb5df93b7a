"""Unstructured magnitude pruning: the sparsity asked for is reached, and kept while training."""

import pytest
import torch
from torch import nn

import optiforge
from optiforge.compress import GradualConfig, PruneConfig, prune, weight_sparsity
from optiforge.compress.masks import MaskCallback, magnitude_masks
from optiforge.compress.schedule import cubic_sparsity
from optiforge.errors import ConfigError, ModelError


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))


def _layer_sparsity(layer):
    return float((layer.weight == 0).float().mean())


def test_global_oneshot_reaches_the_sparsity_over_all_layers():
    model = prune(_mlp(), PruneConfig(sparsity=0.8))
    assert weight_sparsity(model) == pytest.approx(0.8, abs=1e-3)
    assert all(not torch.equal(layer.bias, torch.zeros_like(layer.bias)) for layer in (model[1], model[3]))


def test_global_pruning_removes_the_smallest_weights_first():
    model = _mlp()
    before = [layer.weight.detach().clone() for layer in (model[1], model[3], model[5])]
    prune(model, PruneConfig(sparsity=0.5))
    after = [layer.weight.detach() for layer in (model[1], model[3], model[5])]
    pruned = torch.cat([w[a == 0].abs() for w, a in zip(before, after, strict=True)])
    kept = torch.cat([w[a != 0].abs() for w, a in zip(before, after, strict=True)])
    assert pruned.max() <= kept.min()
    survivors = torch.cat([w[a != 0] for w, a in zip(before, after, strict=True)])
    assert torch.equal(torch.cat([a[a != 0] for a in after]), survivors)  # kept weights unchanged


def test_layer_scope_prunes_every_layer_to_the_same_share():
    model = prune(_mlp(), PruneConfig(sparsity=0.75, scope="layer"))
    for layer in (model[1], model[3], model[5]):
        assert _layer_sparsity(layer) == pytest.approx(0.75, abs=0.01)


def test_excluded_layers_by_name_and_type_stay_dense():
    model = prune(_mlp(), PruneConfig(sparsity=0.9, scope="layer", layers={"exclude": ["5"]}))
    assert _layer_sparsity(model[5]) == 0.0
    assert _layer_sparsity(model[1]) == pytest.approx(0.9, abs=0.01)
    conv = nn.Sequential(nn.Conv1d(1, 8, 3), nn.Flatten(), nn.Linear(8 * 38, 10))
    prune(conv, PruneConfig(sparsity=0.5, scope="layer", layers={"exclude_types": ["Conv1d"]}))
    assert _layer_sparsity(conv[0]) == 0.0 and _layer_sparsity(conv[2]) > 0.4


def test_keep_first_and_last_leave_those_layers_untouched():
    model = prune(_mlp(), PruneConfig(sparsity=0.6, scope="layer", layers={"keep_first": True, "keep_last": True}))
    assert _layer_sparsity(model[1]) == 0.0 and _layer_sparsity(model[5]) == 0.0
    assert _layer_sparsity(model[3]) == pytest.approx(0.6, abs=0.01)


def test_layer_sparsity_overrides_per_layer():
    model = prune(_mlp(), PruneConfig(sparsity=0.5, scope="layer", layer_sparsity={"1": 0.9}))
    assert _layer_sparsity(model[1]) == pytest.approx(0.9, abs=0.01)
    assert _layer_sparsity(model[3]) == pytest.approx(0.5, abs=0.01)


def test_bad_input_gets_a_clear_error():
    with pytest.raises(ConfigError, match="sparsity must be in"):
        PruneConfig(sparsity=1.0)
    with pytest.raises(ConfigError, match="sparsity must be in"):
        PruneConfig(sparsity=-0.1)
    with pytest.raises(ConfigError, match="layers.exclude: no layer matches 'fc9'"):
        prune(_mlp(), PruneConfig(layers={"exclude": ["fc9"]}))
    with pytest.raises(ModelError, match="no layer this technique handles"):
        prune(nn.Sequential(nn.ReLU()), PruneConfig())
    with pytest.raises(ConfigError, match="finetune.epochs >= 1"):
        PruneConfig(schedule="gradual")
    with pytest.raises(ConfigError, match="'oneshot', 'gradual' or a mapping"):
        PruneConfig(schedule="cubic")
    with pytest.raises(ConfigError, match="needs data"):
        prune(_mlp(), PruneConfig(finetune={"epochs": 1}))


def test_cubic_schedule_follows_zhu_and_gupta():
    gradual = GradualConfig(start=0.0, end=1.0)
    assert cubic_sparsity(0, 100, 0.9, gradual) == 0.0
    assert cubic_sparsity(50, 100, 0.9, gradual) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_sparsity(100, 100, 0.9, gradual) == pytest.approx(0.9)
    values = [cubic_sparsity(step, 100, 0.9, gradual) for step in range(101)]
    assert values == sorted(values)


class _Momentum(optiforge.Callback):
    """Records the optimizer's momentum buffers at the end of training."""

    def on_train_end(self, state):
        self.buffers = {id(p): s["momentum_buffer"].clone() for p, s in state.optimizer.state.items()}


@pytest.fixture(scope="module")
def digits():
    return optiforge.build_data(optiforge.DataConfig(name="digits"))


def test_gradual_pruning_reaches_and_keeps_target_through_momentum(digits):
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), digits)
    recorder = _Momentum()
    settings = optiforge.TrainConfig(
        epochs=3, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}
    )

    def finetune(model, config, callbacks=(), name="finetune", lr_scale=1.0):
        return optiforge.train(
            model, digits, config.train_config(settings), callbacks=[*callbacks, recorder], progress=False
        )

    model = prune(
        model,
        PruneConfig(sparsity=0.9, schedule={"end": 0.5, "updates": 5}, finetune={"epochs": 3}),
        digits,
        finetune=finetune,
    )
    assert weight_sparsity(model) == pytest.approx(0.9, abs=2e-3)
    for layer in (model[1], model[3]):
        buffer = recorder.buffers[id(layer.weight)]
        assert torch.all(buffer[layer.weight == 0] == 0)  # momentum cannot revive pruned weights
    assert optiforge.measure(model, digits).value > 0.3  # well above chance (0.1): it still learned


def test_mask_callback_keeps_pruned_weights_zero_under_adam():
    model = _mlp()
    layers = {"1": model[1]}
    masks = magnitude_masks({"1": model[1].weight}, [(["1"], 0.7)])
    callback = MaskCallback(layers, masks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    state = optiforge.training.callbacks.TrainState(model, optimizer, torch.device("cpu"), 1, 5)
    callback.on_train_start(state)
    for _ in range(5):
        model(torch.randn(8, 64)).sum().backward()
        callback.before_optimizer_step(state)
        optimizer.step()
        optimizer.zero_grad()
        callback.after_optimizer_step(state)
    assert _layer_sparsity(model[1]) == pytest.approx(0.7, abs=0.01)
    assert torch.all(optimizer.state[model[1].weight]["exp_avg"][~masks["1"]] == 0)
