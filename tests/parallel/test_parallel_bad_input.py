"""Recipes that cannot run on the asked processes fail with one clear line before any worker starts."""

import os
import socket
from pathlib import Path

import pytest
import torch

from optiforge.cli import main
from optiforge.config import ParallelConfig
from optiforge.errors import ConfigError, ModelError
from optiforge.parallel.pipeline import split_model
from optiforge.parallel.tensor import linear_pairs


def _children() -> set[int]:
    """Live child processes of this test process."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                children.add(int(entry.name))
    return children


def _run(capsys, *arguments: str) -> tuple[int, str]:
    before = _children()
    status = main(["run", *arguments, "--no-progress", "--out", "/tmp/optiforge-never-written"])
    assert _children() == before  # no worker was started, none left behind
    assert not Path("/tmp/optiforge-never-written").exists()
    return status, capsys.readouterr().err


DIGITS = ["--set", "data.name=digits"]  # the pipeline recipe's MNIST-1D takes seconds to build


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["hybrid", "--nproc", "3"], "parallel.hybrid.mesh: [2, 2] needs 4 processes, but 3 were started"),
        (["pipeline", "--nproc", "2", *DIGITS, "--set", "parallel.pipeline.split_points=['0']"], "leave a stage empty"),
        (["pipeline", "--nproc", "8", *DIGITS], "too few for 8 stages"),
        (
            ["pipeline", "--nproc", "2", *DIGITS, "--set", "parallel.pipeline.split_points=['9']"],
            "no top-level module named ['9']",
        ),
        (
            [
                "pipeline",
                "--nproc",
                "2",
                *DIGITS,
                "--set",
                "model.factory=parallel_models:residual",
                "--set",
                "model.name=null",
            ],
            "cuts an nn.Sequential model",
        ),
        (
            [
                "tensor",
                "--nproc",
                "2",
                "--set",
                "model.factory=parallel_models:linear_only",
                "--set",
                "model.name=null",
            ],
            "no Linear → activation → Linear pair",
        ),
        (["tensor", "--nproc", "3"], "not divisible by 3 tensor-parallel processes"),
        (["ddp", "--nproc", "3"], "train.batch_size: 64 is the global batch and must split evenly over 3"),
        (["quickstart", "--nproc", "2"], "parallel.strategy is 'none'"),
    ],
)
def test_recipe_that_does_not_fit_the_processes_is_refused_before_launch(capsys, arguments, message):
    status, error = _run(capsys, *arguments)
    assert status == 2
    assert error.startswith("optiforge: error:") and message in error
    assert len(error.strip().splitlines()) == 1


def test_more_processes_than_gpus_is_refused_before_launch(capsys, monkeypatch):
    # NCCL gives every process a GPU of its own; on one GPU a second process would fail at its first CUDA call
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    status, error = _run(capsys, "ddp", "--nproc", "2")
    assert status == 2
    assert "each process takes a GPU of its own, and this one has 1; use --nproc 1 or fewer" in error
    assert len(error.strip().splitlines()) == 1


def test_a_cpu_recipe_needs_no_gpu_per_process():
    from optiforge.launch import check_gpus

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: True)
        patch.setattr(torch.cuda, "device_count", lambda: 1)
        check_gpus(2, "cpu")  # its workers run with the GPUs hidden, over Gloo
        with pytest.raises(ConfigError, match="a GPU of its own"):
            check_gpus(2, "auto")


def test_taken_port_is_refused_before_launch(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, error = _run(capsys, "ddp", "--nproc", "2", "--set", f"parallel.port={port}")
    assert status == 2
    assert f"port {port} is already in use" in error


def test_automatic_split_balances_parameters_and_keeps_activations_with_their_layer():
    import torch.nn as nn

    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    # parameters: 16,640 | 32,896 | 1,290 -> the big middle layer shares a stage with the small head
    assert split_model(model, 2) == [["0", "1", "2"], ["3", "4", "5"]]
    assert split_model(model, 3) == [["0", "1", "2"], ["3", "4"], ["5"]]
    assert split_model(model, 2, ["5"]) == [["0", "1", "2", "3", "4"], ["5"]]
    with pytest.raises(ConfigError, match="2 split points make 3 stages"):
        split_model(model, 2, ["3", "5"])


def test_tensor_plan_pairs_linear_layers_across_activations():
    import torch.nn as nn

    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 256), nn.GELU(), nn.Dropout(0.1), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    assert linear_pairs(model) == {"1": "colwise", "4": "rowwise"}
    with pytest.raises(ModelError):
        from optiforge.parallel.tensor import tensor_plan

        tensor_plan(nn.Sequential(nn.Linear(4, 2)), ParallelConfig(strategy="tensor"), 2)


def test_pipeline_refuses_a_technique_that_adds_a_loss_term(digits, small_mlp):
    import optiforge
    from optiforge.errors import TrainingError
    from optiforge.parallel.strategy import Strategy

    class ScheduleDriven(Strategy):
        name = "pipeline"
        runs_own_step = True

    class ExtraLoss(optiforge.Callback):
        def compute_loss(self, state, inputs, targets, outputs, loss):
            return loss * 2

    with pytest.raises(TrainingError, match="adds a loss term"):
        optiforge.train(
            small_mlp,
            digits,
            optiforge.TrainConfig(epochs=1),
            strategy=ScheduleDriven(),
            callbacks=[ExtraLoss()],
            progress=False,
        )


def test_a_worker_without_a_gpu_of_its_own_is_a_clear_error(monkeypatch):
    from optiforge.parallel import process_group

    # torchrun started directly with more processes than GPUs: the second worker would get CUDA's
    # "invalid device ordinal" at its first call
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(process_group.dist, "is_initialized", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="local rank 1 has no GPU of its own: this machine has 1"):
        process_group.init_process_group()
