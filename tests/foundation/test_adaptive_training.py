"""Training that adapts itself: lr: auto, batch_size: auto, stop_at; the on-device data path; slow bf16."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import optiforge
from optiforge.errors import ConfigError, TrainingError
from optiforge.hardware.capabilities import cpu_has_bf16
from optiforge.tasks import task_for
from optiforge.training.auto_batch import CANDIDATES, scaled_lr


def _mlp(digits, seed=0):
    torch.manual_seed(seed)
    return optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), digits)


def _final_accuracy(digits, config):
    try:
        result = optiforge.train(_mlp(digits), digits, config, progress=False)
    except TrainingError:  # the loss became NaN: diverged
        return 0.0
    return result.history[-1]["val_accuracy"]


CONVERGED = 0.9  # validation accuracy after 3 epochs; the best rates reach 0.93-0.94, a tenfold wrong one below 0.8


def test_lr_auto_chooses_inside_the_range_where_training_converges_on_every_seed(digits, one_thread):
    config = optiforge.TrainConfig(epochs=3, optimizer={"name": "adam", "lr": "auto"})
    grid = [10 ** (exponent / 2) for exponent in range(-8, 1)]  # 1e-4 to 1 in half decades
    converging = [
        rate
        for rate in grid
        if _final_accuracy(
            digits, config.model_copy(update={"optimizer": config.optimizer.model_copy(update={"lr": rate})})
        )
        >= CONVERGED
    ]
    # the range is closed on both sides inside the grid: too low a rate learns too little, too high diverges
    assert converging and grid[0] < converging[0] and converging[-1] < grid[-1], converging
    for seed in (0, 1, 2):
        seeded = config.model_copy(update={"seed": seed})
        result = optiforge.train(_mlp(digits, seed), digits, seeded, progress=False)
        chosen = result.choices["lr"]
        assert result.config.optimizer.lr == chosen
        assert "range test 1e-05 to 10" in result.choices["lr_reason"]
        assert converging[0] <= chosen <= converging[-1], (seed, chosen, converging)
        assert result.history[-1]["val_accuracy"] >= CONVERGED


def test_lr_auto_under_one_cycle_peaks_closer_to_the_lowest_loss(digits, one_thread):
    constant = optiforge.TrainConfig(epochs=1, optimizer={"name": "adam", "lr": "auto"})
    one_cycle = constant.model_copy(update={"schedule": optiforge.ScheduleConfig(name="onecycle")})
    steady = optiforge.train(_mlp(digits), digits, constant, progress=False).choices
    cycled = optiforge.train(_mlp(digits), digits, one_cycle, progress=False).choices
    # the same range test (same seed and batches): a tenth of the lowest-loss rate, against a third as the peak
    assert cycled["lr"] == pytest.approx(steady["lr"] * 10 / 3)
    assert "one-cycle peaks at a third of it" in cycled["lr_reason"]
    assert "a tenth of it" in steady["lr_reason"]


class _Dead(nn.Module):
    """Outputs that do not depend on the weights: no rate can lower the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.linear(inputs.flatten(1)) * 0.0


def test_lr_auto_on_a_model_whose_loss_never_falls_names_the_range(digits, one_thread):
    config = optiforge.TrainConfig(epochs=1, lr="auto")
    with pytest.raises(TrainingError, match=r"train\.optimizer\.lr: auto: the loss never fell .*1e-05 to 10"):
        optiforge.train(_Dead(), digits, config, progress=False)


def test_stop_at_stops_after_the_first_epoch_reaching_the_target(digits, one_thread):
    config = optiforge.TrainConfig(epochs=8, optimizer={"name": "sgd", "lr": 0.05})
    full = optiforge.train(_mlp(digits), digits, config, progress=False).history
    target = full[3]["val_accuracy"]
    expected = next(record["epoch"] for record in full if record["val_accuracy"] >= target)
    assert expected < 8
    result = optiforge.train(
        _mlp(digits), digits, config.model_copy(update={"stop_at": {"accuracy": target}}), progress=False
    )
    assert result.epochs_run == expected
    assert result.history == full[:expected]
    assert result.choices["stop_at_epoch"] == expected
    assert result.stopped_early


def test_stop_at_never_reached_ends_at_epochs_with_the_best_metric(digits, one_thread):
    config = optiforge.TrainConfig(epochs=3, optimizer={"name": "sgd", "lr": 0.05}, stop_at={"metric": 1.01})
    result = optiforge.train(_mlp(digits), digits, config, progress=False)
    assert result.epochs_run == 3
    assert result.choices["stop_at_epoch"] is None
    best = max(result.history, key=lambda record: record["val_accuracy"])
    assert result.choices["best_val_accuracy"] == best["val_accuracy"]
    assert result.choices["best_epoch"] == best["epoch"]
    assert not result.stopped_early


def test_resume_after_a_stop_at_stop_does_not_train_further(digits, tmp_path, one_thread):
    config = optiforge.TrainConfig(epochs=8, optimizer={"name": "sgd", "lr": 0.05}, stop_at={"accuracy": 0.5})
    first = optiforge.train(_mlp(digits), digits, config, checkpoint_dir=tmp_path, progress=False)
    assert first.epochs_run < 8
    again = optiforge.train(_mlp(digits, seed=5), digits, config, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert again.epochs_run == first.epochs_run
    assert again.history == first.history
    assert again.choices["stop_at_epoch"] == first.choices["stop_at_epoch"]
    for key, value in first.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value)


def test_batch_size_auto_picks_a_measured_candidate_and_scales_the_rate(digits, one_thread):
    config = optiforge.TrainConfig(epochs=1, batch_size="auto", optimizer={"name": "adam", "lr": 0.001})
    result = optiforge.train(_mlp(digits), digits, config, progress=False)
    chosen = result.choices["batch_size"]
    assert chosen in CANDIDATES and chosen <= len(digits.train) // 8
    assert result.config.batch_size == chosen
    assert f"{chosen}: " in result.choices["batch_size_reason"]
    assert result.choices["lr"] == pytest.approx(scaled_lr(0.001, chosen, "adam"))
    assert "sqrt rule" in result.choices["lr_reason"]


class _Killed(Exception):
    pass


class _KillAfterFirstEpoch(optiforge.Callback):
    def on_epoch_start(self, state):
        if state.epoch == 1:  # the first epoch's checkpoint is written
            raise _Killed


def test_auto_choices_are_not_measured_again_on_resume(digits, tmp_path, one_thread):
    config = optiforge.TrainConfig(epochs=2, batch_size="auto", lr="auto")
    with pytest.raises(_Killed):
        optiforge.train(
            _mlp(digits), digits, config, callbacks=[_KillAfterFirstEpoch()], checkpoint_dir=tmp_path, progress=False
        )
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["choices"]
    resumed = optiforge.train(_mlp(digits), digits, config, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.epochs_run == 2
    assert resumed.choices == saved
    assert resumed.config.batch_size == saved["batch_size"]


def test_the_on_device_path_gives_the_dataloaders_batches_and_random_numbers(digits, one_thread):
    config = optiforge.TrainConfig(epochs=2, batch_size=50, optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})
    runs = []
    for on_device in (True, False):
        torch.manual_seed(0)
        model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32], dropout=0.3), digits)
        hardware = optiforge.HardwareConfig(data_on_device=on_device)
        runs.append((optiforge.train(model, digits, config, hardware=hardware, progress=False).history, torch.rand(1)))
    assert runs[0][0] == runs[1][0]  # the same batches and the same dropout masks
    assert torch.equal(runs[0][1], runs[1][1])  # the global generator is left where the DataLoader leaves it


def test_eval_every_skips_validation_between_passes(digits, one_thread):
    config = optiforge.TrainConfig(epochs=5, validation={"every_epochs": 2}, optimizer={"name": "sgd", "lr": 0.05})
    history = optiforge.train(_mlp(digits), digits, config, progress=False).history
    assert ["val_accuracy" in record for record in history] == [False, True, False, True, True]


@pytest.mark.skipif(cpu_has_bf16(), reason="this CPU computes in bf16 natively")
def test_bf16_on_a_cpu_without_units_warns_with_the_measured_time(digits, caplog, one_thread):
    hardware = optiforge.HardwareConfig(device="cpu", precision="bf16")
    with caplog.at_level(logging.INFO, logger="optiforge"):
        optiforge.train(_mlp(digits), digits, optiforge.TrainConfig(epochs=0), hardware=hardware, progress=False)
    message = next(record.getMessage() for record in caplog.records if "bf16 units" in record.getMessage())
    assert "ms against" in message and "in fp32" in message


def test_auto_values_and_stop_at_are_checked():
    assert optiforge.TrainConfig(lr="auto").optimizer.lr == "auto"
    assert optiforge.TrainConfig(batch_size="auto").batch_size == "auto"
    for bad in ({"lr": "fast"}, {"lr": 0.0}, {"batch_size": 0}, {"stop_at": {"accuracy": 0.9, "loss": 0.1}}):
        with pytest.raises(ConfigError):
            optiforge.TrainConfig(**bad)


def test_the_train_row_of_the_report_shows_the_choices(tmp_path, one_thread):
    overrides = ["train.epochs=2", "train.lr=auto", "train.stop_at={accuracy: 0.99}", "measure.latency_repeats=2"]
    run = optiforge.run_recipe("quickstart", overrides, out=tmp_path, progress=False, show_table=False)
    row = run.report["stages"][0]
    assert row["lr"] > 0 and "range test" in row["lr_reason"]
    assert row["stop_at"] == "val accuracy >= 0.99"
    assert row["best_epoch"] in (1, 2) and 0 < row["best_val_accuracy"] <= 1


def test_channels_last_reaches_the_convolutions(one_thread):
    data = optiforge.build_data(optiforge.DataConfig(name="digits", image=True))
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="cnn2d", channels=[4, 8], hidden=16), data)
    hardware = optiforge.HardwareConfig(device="cpu", channels_last=True)
    trained = optiforge.train(model, data, optiforge.TrainConfig(epochs=1), hardware=hardware, progress=False).model
    convolutions = [module for module in trained.modules() if isinstance(module, nn.Conv2d)]
    assert convolutions
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convolutions)


@pytest.mark.slow
def test_fast_mnist1d_stops_at_its_target_and_holds_it_on_test(tmp_path):
    run = optiforge.run_recipe("fast-mnist1d", out=tmp_path, progress=False, show_table=False)
    (row,) = run.report["stages"]
    assert row["stop_at_epoch"] is not None and row["stop_at_epoch"] == row["epochs"] < 40
    # checked every half epoch of 29 steps: it stops within the epoch it reached the target in
    assert (row["epochs"] - 1) * 29 < row["stop_at_step"] <= row["epochs"] * 29
    assert row["best_val_accuracy"] >= 0.96
    assert row["value"] >= 0.94, row["value"]  # test accuracy of the model that reached the target


def test_recipes_with_auto_values_pass_the_checks_before_a_run(capsys):
    from optiforge.cli import main
    from optiforge.launch import check_fits

    assert main(["validate", "quickstart", "--set", "train.lr=auto", "--set", "train.batch_size=auto"]) == 0
    assert "is valid" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"train\.batch_size: 'auto' is measured in one process"):
        check_fits(optiforge.load_recipe("ddp", ["train.batch_size=auto"]), 2)


class _ScoreEveryStep(optiforge.Callback):
    """The validation accuracy after every optimizer step, scored as the loop scores it."""

    def __init__(self, digits):
        self.digits, self.scores = digits, {}

    def after_optimizer_step(self, state):
        loader = torch.utils.data.DataLoader(self.digits.val, batch_size=512)
        self.scores[state.step] = task_for("classification").evaluate(state.model, loader, state.device)["accuracy"]


def test_stop_at_checked_every_quarter_epoch_stops_at_the_first_checked_step_reaching_it(digits, one_thread):
    settings = {"epochs": 3, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05}}
    scoring = _ScoreEveryStep(digits)
    optiforge.train(_mlp(digits), digits, optiforge.TrainConfig(**settings), callbacks=[scoring], progress=False)
    steps_per_epoch = -(-len(digits.train) // 64)
    every = round(steps_per_epoch / 4)
    checked = [step for step in scoring.scores if step % every == 0 or step % steps_per_epoch == 0]
    # a target first met at a checked step inside the second epoch
    target = scoring.scores[steps_per_epoch + every]
    expected = next(step for step in checked if scoring.scores[step] >= target)
    assert expected % steps_per_epoch != 0, "the target must be met mid-epoch for this test"
    stopping = optiforge.TrainConfig(**settings, stop_at={"accuracy": target}, validation={"every_epochs": 0.25})
    result = optiforge.train(_mlp(digits), digits, stopping, progress=False)
    assert result.choices["stop_at_step"] == expected
    assert result.choices["stop_at_epoch"] == expected // steps_per_epoch + 1 == result.epochs_run
    assert result.history[-1]["step"] == expected
    assert result.history[-1]["val_accuracy"] == pytest.approx(scoring.scores[expected])
    assert result.stopped_early


def test_a_fraction_of_an_epoch_between_validations_needs_stop_at():
    assert optiforge.TrainConfig(validation={"every_epochs": 0.5}, stop_at={"accuracy": 0.9}).validation.every_epochs
    with pytest.raises(ConfigError, match="every_epochs: 0.5 validates mid-epoch for train.stop_at only"):
        optiforge.TrainConfig(validation={"every_epochs": 0.5})
    with pytest.raises(ConfigError, match="whole number of epochs or a fraction below 1"):
        optiforge.TrainConfig(validation={"every_epochs": 1.5})
