"""Every built-in parallel recipe runs from the command line on real Gloo processes; a killed worker is restarted."""

import json
import sys

import pytest
import torch
from parallel_launch import optiforge_cli, processes_mentioning, run_in_session, worker_env

import optiforge

pytestmark = pytest.mark.distributed


def _run(recipe: str, nproc: int, out, *overrides: str, timeout: float = 240, verbose: bool = False):
    arguments = [*(["-v"] if verbose else []), "run", recipe, "--nproc", str(nproc), "--out", str(out), "--no-progress"]
    for override in ("train.epochs=2", *overrides):
        arguments += ["--set", override]
    finished = optiforge_cli(*arguments, timeout=timeout)
    assert finished.returncode == 0, finished.stdout[-4000:]
    return finished, json.loads((out / "report.json").read_text())


def _plain_model(recipe: str, out):
    loaded = optiforge.load_recipe(recipe, ["data.name=digits"])
    data = optiforge.build_data(loaded.data)
    return optiforge.build_model(loaded.model, data)


def test_ddp_recipe_restarts_a_killed_rank_finishes_and_only_rank_0_reports(tmp_path):
    # one launch checks both the built-in recipe and fault tolerance: starting the processes is most of the time
    marker = tmp_path / "killed.txt"
    dying = [
        "model.factory=parallel_models:dying_mlp",
        "model.name=null",
        # digits: 20 steps of 32 samples per process per epoch, so step 30 is in the middle of epoch 2
        "model.die_at_step=30",
        f"model.marker={marker}",
    ]
    out = tmp_path / "run"
    finished, report = _run("ddp", 2, out, *dying, verbose=True)
    assert marker.is_file(), "rank 1 was never killed"
    assert processes_mentioning(str(out)) == []  # the launcher and every worker have exited
    assert "resumed" in finished.stdout and "after epoch 1" in finished.stdout
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert finished.stdout.count("report:") == 1  # the table and report come from rank 0 alone
    assert report["environment"]["world_size"] == 2
    assert [row["stage"] for row in report["stages"]] == ["train"]
    assert [epoch["epoch"] for epoch in report["histories"]["train"]] == [1, 2]
    assert report["stages"][0]["value"] > 0.5
    # the checkpoint holds plain weights: one process loads it without any parallel setup
    model = _plain_model("ddp", out)
    model.load_state_dict(torch.load(out / "train" / "checkpoint.pt", weights_only=True)["model"])
    artifact = torch.load(out / report["stages"][0]["artifact"], weights_only=True)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, artifact[name])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "nproc", "overrides"),
    [
        ("fsdp", 2, ()),
        ("fsdp", 2, ("parallel.fsdp.cpu_offload=true",)),
        ("pipeline", 2, ("data.name=digits",)),
        (
            "pipeline",
            2,
            ("data.name=digits", "parallel.pipeline.schedule=gpipe", "parallel.pipeline.split_points=['5']"),
        ),
        ("tensor", 2, ()),
        ("hybrid", 4, ()),
        ("hybrid", 4, ("parallel.hybrid.inner=tensor",)),
        ("hybrid", 4, ("parallel.hybrid.inner=pipeline",)),
    ],
)
def test_parallel_recipe_runs_and_trains(tmp_path, recipe, nproc, overrides):
    _, report = _run(recipe, nproc, tmp_path, *overrides)
    assert report["environment"]["world_size"] == nproc
    assert report["stages"][0]["value"] > 0.5
    model = _plain_model(recipe, tmp_path)
    model.load_state_dict(torch.load(tmp_path / report["stages"][0]["artifact"], weights_only=True))


@pytest.mark.slow
def test_recipe_with_a_strategy_runs_without_the_launcher_as_one_process(tmp_path):
    finished = optiforge_cli("run", "fsdp", "--out", str(tmp_path), "--no-progress", "--set", "train.epochs=1")
    assert finished.returncode == 0, finished.stdout[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["environment"]["world_size"] == 1


@pytest.mark.slow
def test_fsdp_shards_saved_by_two_processes_load_into_one(tmp_path):
    _run("fsdp", 2, tmp_path)
    shards = sorted((tmp_path / "train").glob("sharded-*"))
    assert [path.name for path in shards] == ["sharded-1", "sharded-2"]
    script = f"""
import torch, optiforge
from pathlib import Path
from optiforge.parallel.sharded import FullyShardedDataParallel
from optiforge.parallel.dtensor_state import load_sharded
recipe = optiforge.load_recipe("fsdp")
data = optiforge.build_data(recipe.data)
model = optiforge.build_model(recipe.model, data)
strategy = FullyShardedDataParallel(recipe.parallel)
strategy.wrap(model, torch.device("cpu"))
optimizer = torch.optim.AdamW(model.parameters())
load_sharded(model, optimizer, {{"sharded": "sharded-2"}}, Path("{tmp_path / "train"}"))
assert optimizer.state, "optimizer state was not restored"
torch.save(strategy.unwrap(model).state_dict(), "{tmp_path / "resharded.pt"}")
"""
    finished = run_in_session([sys.executable, "-c", script], 120, worker_env())
    assert finished.returncode == 0, finished.stdout[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    final = torch.load(tmp_path / report["stages"][0]["artifact"], weights_only=True)
    resharded = torch.load(tmp_path / "resharded.pt", weights_only=True)
    for name, tensor in final.items():
        torch.testing.assert_close(resharded[name], tensor)
