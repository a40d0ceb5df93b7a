"""A worker killed mid-epoch is restarted by the elastic launcher and the run resumes and finishes."""

import json

import pytest
import yaml
from parallel_launch import optiforge_cli, processes_mentioning

pytestmark = pytest.mark.distributed


def test_killed_rank_is_restarted_and_the_run_finishes_with_a_full_report(tmp_path):
    marker = tmp_path / "killed.txt"
    recipe = tmp_path / "faulty.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "faulty",
                "data": {"name": "digits"},
                # digits: 20 steps of 32 samples per process per epoch, so step 30 is in the middle of epoch 2
                "model": {
                    "factory": "parallel_models:dying_mlp",
                    "hidden": [32],
                    "die_at_step": 30,
                    "marker": str(marker),
                },
                "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}},
                "parallel": {"strategy": "ddp", "max_restarts": 1},
            }
        )
    )
    out = tmp_path / "run"
    finished = optiforge_cli("-v", "run", str(recipe), "--nproc", "2", "--out", str(out), "--no-progress", timeout=240)
    assert finished.returncode == 0, finished.stdout[-4000:]
    assert marker.is_file(), "rank 1 was never killed"
    assert processes_mentioning(str(out)) == []  # the launcher and every worker have exited
    assert "resumed" in finished.stdout and "after epoch 1" in finished.stdout
    report = json.loads((out / "report.json").read_text())
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert [row["stage"] for row in report["stages"]] == ["train"]
    assert [epoch["epoch"] for epoch in report["histories"]["train"]] == [1, 2]
    assert report["stages"][0]["value"] > 0.5
    assert (out / report["stages"][0]["artifact"]).is_file()
