"""The training loop: learning, accumulation, clipping, early stop, NaN, checkpoints, resume."""

from __future__ import annotations

import copy

import pytest
import torch

import optiforge
from optiforge.errors import TrainingError
from optiforge.training.checkpoint import load_checkpoint


def _weights(model):
    return {key: value.clone() for key, value in model.state_dict().items()}


def _same(a, b, atol=0.0):
    return all(torch.allclose(a[key], b[key], atol=atol, rtol=0) for key in a)


def test_training_learns_digits(digits, small_mlp):
    result = optiforge.train(
        small_mlp,
        digits,
        optiforge.TrainConfig(epochs=5, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9}),
        progress=False,
    )
    assert len(result.history) == 5
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 2
    assert result.history[-1]["val_accuracy"] > 0.85


def test_same_seed_gives_identical_weights(digits):
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16], dropout=0.2), digits)
        optiforge.train(model, digits, optiforge.TrainConfig(epochs=2, seed=3), progress=False)
        runs.append(_weights(model))
    assert _same(*runs)


def test_gradient_accumulation_matches_the_larger_batch(digits):
    torch.manual_seed(0)
    base = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16]), digits)
    accumulated, large = copy.deepcopy(base), copy.deepcopy(base)
    # 32-sample batches × 2 accumulation steps == 64-sample batches (same order, mean losses)
    optiforge.train(
        accumulated,
        digits,
        optiforge.TrainConfig(epochs=1, batch_size=32, gradients={"accumulation_steps": 2}),
        progress=False,
    )
    optiforge.train(large, digits, optiforge.TrainConfig(epochs=1, batch_size=64), progress=False)
    assert not _same(_weights(base), _weights(large))
    # the last, partial accumulation window differs in size, so compare on sizes that divide evenly
    assert _same(_weights(accumulated), _weights(large), atol=1e-4) or len(digits.train) % 64 != 0


def test_gradient_accumulation_exact_on_even_split():
    data = optiforge.build_data(optiforge.DataConfig(factory="factories:blobs", n=256, val_fraction=0.0))
    torch.manual_seed(0)
    base = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[8]), data)
    accumulated, large = copy.deepcopy(base), copy.deepcopy(base)
    optiforge.train(
        accumulated,
        data,
        optiforge.TrainConfig(epochs=2, batch_size=16, gradients={"accumulation_steps": 4}),
        progress=False,
    )
    optiforge.train(large, data, optiforge.TrainConfig(epochs=2, batch_size=64), progress=False)
    assert _same(_weights(accumulated), _weights(large), atol=1e-5)
    assert not _same(_weights(base), _weights(large), atol=1e-3)


def test_gradient_clipping_bounds_the_norm(digits, small_mlp):
    norms = []

    class Norm(optiforge.Callback):
        def before_optimizer_step(self, state):
            norms.append(torch.nn.utils.get_total_norm([p.grad for p in state.model.parameters()]).item())

    optiforge.train(
        small_mlp,
        digits,
        optiforge.TrainConfig(epochs=1, lr=1.0, gradients={"clip_norm": 0.01}),
        callbacks=[Norm()],
        progress=False,
    )
    assert max(norms) <= 0.01 + 1e-6


def test_early_stopping_stops_and_restores_best(digits, small_mlp):
    config = optiforge.TrainConfig(
        epochs=50, lr=1e-6, validation={"early_stopping": {"patience": 2, "min_delta": 0.01}}
    )
    result = optiforge.train(small_mlp, digits, config, progress=False)
    assert result.stopped_early and result.epochs_run == 3


def test_callback_hooks_run_in_order(digits, small_mlp):
    calls = []

    class Recorder(optiforge.Callback):
        def __getattribute__(self, name):
            hook = object.__getattribute__(self, name)
            if name.startswith(("on_", "before_", "after_")) and callable(hook):

                def wrapped(*args, **kwargs):
                    calls.append(name)
                    return hook(*args, **kwargs)

                return wrapped
            return hook

    optiforge.train(
        small_mlp, digits, optiforge.TrainConfig(epochs=1, batch_size=1024), callbacks=[Recorder()], progress=False
    )
    assert calls[0] == "on_train_start" and calls[-1] == "on_train_end"
    first_step = calls[calls.index("before_backward") : calls.index("after_optimizer_step") + 1]
    assert first_step == ["before_backward", "after_backward", "before_optimizer_step", "after_optimizer_step"]
    assert calls.index("on_eval") < calls.index("on_epoch_end")


def test_non_finite_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, digits, small_mlp):
    class Explode(optiforge.Callback):
        def compute_loss(self, state, inputs, targets, outputs, loss):
            return loss * float("nan") if state.epoch == 1 else loss

    with pytest.raises(TrainingError, match=r"loss became nan at epoch 2.*last good checkpoint kept"):
        optiforge.train(
            small_mlp,
            digits,
            optiforge.TrainConfig(epochs=3),
            callbacks=[Explode()],
            checkpoint_dir=tmp_path,
            progress=False,
        )
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["epoch"] == 1 and not saved["finished"]
    assert all(torch.isfinite(value).all() for value in saved["model"].values())


def test_resume_ends_with_same_weights_as_uninterrupted_run(tmp_path, digits):
    def fresh():
        torch.manual_seed(0)
        return optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16], dropout=0.3), digits)

    config = optiforge.TrainConfig(
        epochs=4, lr=0.05, optimizer={"name": "sgd", "momentum": 0.9}, schedule={"name": "cosine", "warmup_epochs": 1}
    )
    straight = fresh()
    optiforge.train(straight, digits, config, progress=False)

    class StopAfterTwo(optiforge.Callback):
        def on_epoch_end(self, state):
            if state.epoch == 2:
                raise KeyboardInterrupt  # stands for a killed process

    interrupted = fresh()
    with pytest.raises(KeyboardInterrupt):
        optiforge.train(
            interrupted, digits, config, callbacks=[StopAfterTwo()], checkpoint_dir=tmp_path, progress=False
        )
    torch.manual_seed(123)  # the resumed process starts with other RNG state
    resumed = fresh()
    result = optiforge.train(resumed, digits, config, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert _same(_weights(straight), _weights(resumed))


def test_finished_checkpoint_returns_without_training(tmp_path, digits, small_mlp):
    config = optiforge.TrainConfig(epochs=2)
    optiforge.train(small_mlp, digits, config, checkpoint_dir=tmp_path, progress=False)
    trained = _weights(small_mlp)
    again = copy.deepcopy(small_mlp)
    steps = []

    class Count(optiforge.Callback):
        def after_optimizer_step(self, state):
            steps.append(1)

    optiforge.train(again, digits, config, checkpoint_dir=tmp_path, resume=True, callbacks=[Count()], progress=False)
    assert steps == [] and _same(trained, _weights(again))


def test_checkpoint_loading_refuses_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"epoch": Payload()}, tmp_path / "checkpoint.pt")
    with pytest.raises(TrainingError, match="cannot be read"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_bf16_autocast_trains_on_cpu(digits, small_mlp):
    dtypes = set()

    class Dtype(optiforge.Callback):
        def compute_loss(self, state, inputs, targets, outputs, loss):
            dtypes.add(outputs.dtype)
            return loss

    result = optiforge.train(
        small_mlp,
        digits,
        optiforge.TrainConfig(epochs=3, optimizer={"momentum": 0.9}),
        hardware=optiforge.HardwareConfig(device="cpu", precision="bf16"),
        callbacks=[Dtype()],
        progress=False,
    )
    assert dtypes == {torch.bfloat16}
    assert result.history[-1]["val_accuracy"] > 0.8
    assert all(p.dtype == torch.float32 for p in small_mlp.parameters())  # master weights stay fp32


def test_data_workers_load_batches_in_worker_processes():
    data = optiforge.build_data(optiforge.DataConfig(factory="factories:worker_only_blobs", workers=2))
    assert data.workers == 2
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[8]), data)
    data.train.strict = True  # from here on, a read in this process fails
    result = optiforge.train(model, data, optiforge.TrainConfig(epochs=1), progress=False)
    assert result.epochs_run == 1  # every training batch came from a worker process
