"""Start real worker processes with torch.distributed.run for the tests, and clean up after them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO / "src"), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def run_in_session(
    command: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run ``command`` in its own session; on timeout kill that whole session, so no worker outlives the test."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or worker_env(),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"timed out after {timeout} s:\n{output[-4000:]}") from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, output, None)


def torchrun(
    script: str, *arguments: str, nproc: int = 2, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node N script args`` on a free port."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{free_port()}",
        str(HERE / script),
        *arguments,
    ]
    return run_in_session(command, timeout, worker_env(**env))


def worker_results(script: str, folder: Path, ranks: int = 2, timeout: float = 180) -> list:
    """Run ``script FOLDER`` on ``ranks`` processes; each writes ``rank<N>.pt`` there, returned in rank order."""
    import torch

    finished = torchrun(script, str(folder), nproc=ranks, timeout=timeout)
    assert finished.returncode == 0, finished.stdout[-4000:]
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(ranks)]


def largest_difference(weights: dict, reference: dict) -> float:
    """The largest absolute difference between two state dicts with the same keys."""
    assert weights.keys() == reference.keys()
    return max((weights[name] - reference[name]).abs().max().item() for name in reference)


def optiforge_cli(*arguments: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    """The ``optiforge`` command in a fresh process (``--nproc`` makes it launch workers)."""
    return run_in_session([sys.executable, "-m", "optiforge.cli", *arguments], timeout, worker_env(**env))


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (e.g. a run folder): orphans, after a run."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in command and state != "Z":
            found.append(int(entry.name))
    return found
