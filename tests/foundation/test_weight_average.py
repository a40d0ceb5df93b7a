"""train.optimizer.weight_average: validation, stop_at and the returned model see the moving average."""

from __future__ import annotations

import pytest
import torch

import optiforge
from optiforge.errors import ConfigError
from optiforge.training.callbacks import Callback


def _mlp(digits, seed=0):
    torch.manual_seed(seed)
    return optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), digits)


class _RecordWeights(Callback):
    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def after_optimizer_step(self, state) -> None:
        self.steps.append({key: value.detach().clone() for key, value in state.model.state_dict().items()})


class _Interrupt(Callback):
    def on_epoch_start(self, state) -> None:
        if state.epoch == 2:
            raise KeyboardInterrupt


def _config(average=True):
    optimizer = {"name": "sgd", "lr": 0.2, "weight_average": {"decay": 0.9} if average else None}
    return optiforge.TrainConfig(epochs=3, optimizer=optimizer)


def test_the_returned_model_is_the_moving_average_of_the_weights(digits, one_thread):
    recorder = _RecordWeights()
    result = optiforge.train(_mlp(digits), digits, _config(), callbacks=[recorder], progress=False)
    expected = {key: value.clone() for key, value in _mlp(digits).state_dict().items()}
    for updates, weights in enumerate(recorder.steps):
        decay = min(0.9, (1 + updates) / (10 + updates))
        for key in expected:
            expected[key] = decay * expected[key] + (1 - decay) * weights[key]
    last = recorder.steps[-1]
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    assert any(not torch.allclose(value, last[key]) for key, value in result.model.state_dict().items())


def test_validation_scores_the_averaged_weights(digits, one_thread):
    result = optiforge.train(_mlp(digits), digits, _config(), progress=False)
    loader = torch.utils.data.DataLoader(digits.val, batch_size=512)
    scored = optiforge.tasks.task_for(digits.task).evaluate(result.model, loader, torch.device("cpu"))
    assert scored["accuracy"] == result.history[-1]["val_accuracy"]
    plain = optiforge.train(_mlp(digits), digits, _config(average=False), progress=False)
    assert [r["val_accuracy"] for r in plain.history] != [r["val_accuracy"] for r in result.history]


def test_a_resumed_run_continues_the_same_average(digits, tmp_path, one_thread):
    whole = optiforge.train(_mlp(digits), digits, _config(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        optiforge.train(
            _mlp(digits), digits, _config(), checkpoint_dir=tmp_path, callbacks=[_Interrupt()], progress=False
        )
    resumed = optiforge.train(
        _mlp(digits, seed=3), digits, _config(), checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert resumed.history == whole.history
    for key, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_a_decay_outside_zero_to_one_is_refused(decay):
    with pytest.raises(ConfigError, match=r"weight_average\.decay"):
        optiforge.TrainConfig(optimizer={"weight_average": {"decay": decay}})


def test_a_strategy_over_several_processes_refuses_the_average(digits):
    from optiforge.parallel.strategy import Strategy

    class _Replicated(Strategy):
        name = "ddp"

    with pytest.raises(ConfigError, match=r"train\.optimizer\.weight_average: .*parallel\.strategy 'ddp'"):
        optiforge.train(_mlp(digits), digits, _config(), strategy=_Replicated(), progress=False)
