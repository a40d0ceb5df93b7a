"""A run killed with SIGKILL mid-epoch resumes from its last checkpoint and finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

HELPERS = str(Path(__file__).parents[1] / "helpers")
ARGS = [
    "--set",
    "data.factory=factories:slow_blobs",
    "--set",
    "data.name=null",
    "--set",
    "model.hidden=[16]",
    "--set",
    "train.epochs=4",
    "--set",
    "train.batch_size=32",
    "--no-progress",
]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=HELPERS + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "optiforge.cli", "run", *ARGS, "--out", str(out), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    straight = _start(tmp_path / "straight")
    killed_dir = tmp_path / "killed"
    victim = _start(killed_dir)
    checkpoint = killed_dir / "train" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists(), victim.communicate()[1]
    time.sleep(0.3)  # into the next epoch (each takes about a second)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert not (killed_dir / "report.json").exists()  # it really died before finishing
    saved_epoch = torch.load(checkpoint, weights_only=True)["epoch"]
    assert 1 <= saved_epoch < 4

    resumed = _start(killed_dir, "--resume")
    _, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    _, err = straight.communicate(timeout=180)
    assert straight.returncode == 0, err

    report = json.loads((killed_dir / "report.json").read_text())
    assert report["stages"][0]["epochs"] == 4
    a = torch.load(tmp_path / "straight" / "train" / "model.pt", weights_only=True)
    b = torch.load(killed_dir / "train" / "model.pt", weights_only=True)
    assert all(torch.equal(a[key], b[key]) for key in a)
