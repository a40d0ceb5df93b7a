"""Workers stop when their launcher is killed or interrupted: none is left running as an orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from parallel_launch import processes_mentioning, worker_env

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def _workers_of(launcher: subprocess.Popen, out: str) -> list[int]:
    return [pid for pid in processes_mentioning(out) if pid != launcher.pid]


@pytest.mark.parametrize("sent", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_workers_stop_when_the_launcher_is_killed(tmp_path, sent):
    out = str(tmp_path / "run")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "optiforge.cli", "run", "--nproc", "2", "--out", out, "--no-progress"]
        + ["--set", "parallel.strategy=ddp", "--set", "hardware.device=cpu", "--set", "train.epochs=1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=worker_env(),
        start_new_session=True,  # Ctrl-C at a terminal reaches the launcher's group; the workers have their own
    )
    try:
        deadline = time.time() + 180
        while not (tmp_path / "run" / "train" / "checkpoint.pt").exists():  # both workers are training
            assert launcher.poll() is None and time.time() < deadline, "the run never got going"
            time.sleep(0.2)
        workers = _workers_of(launcher, out)
        assert len(workers) == 2
        os.killpg(launcher.pid, sent)
        launcher.wait(timeout=60)
        deadline = time.time() + 60
        while _workers_of(launcher, out) and time.time() < deadline:
            time.sleep(0.2)
        assert _workers_of(launcher, out) == []
        # rank 0 stopped on a signal it could handle (SIGTERM, or SIGINT passed on), not outright: it said
        # so and let go of the folder
        state = json.loads((tmp_path / "run" / "run.json").read_text())
        assert state["status"] == "failed" and state["reason"].startswith(("terminated", "interrupted")), state
        assert not (tmp_path / "run" / ".optiforge.lock").exists()
    finally:
        for pid in [launcher.pid, *_workers_of(launcher, out)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher.wait(timeout=30)
