"""Run folders: user files survive, names stay inside runs/, one run at a time, run.json says how it ended."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys

import pytest

import optiforge.files
from optiforge.cli import main
from optiforge.errors import OptiforgeError, RecipeError
from optiforge.run_folder import LOCK_NAME
from optiforge.runner import run_recipe
from optiforge.stages import STAGES, StageKind

RECIPE = {
    "name": "folders",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"epochs": 1, "batch_size": 256},
    "measure": {"latency_repeats": 2, "warmup": 0, "throughput_repeats": 1, "throughput_batch": 16},
}


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """Drawing plots takes most of a small run's time and none of these tests looks at them."""
    import optiforge.runner

    monkeypatch.setattr(optiforge.runner, "plot_training_curves", lambda *args: None)
    monkeypatch.setattr(optiforge.runner, "plot_tradeoff", lambda *args: None)


def run(out, overrides=(), **kwargs):
    return run_recipe(RECIPE, list(overrides), out=out, progress=False, show_table=False, **kwargs)


def status(out) -> dict:
    return json.loads((out / "run.json").read_text())


def test_a_rerun_replaces_only_its_own_files_and_keeps_the_users(tmp_path):
    out = tmp_path / "run"
    run(out, ["stages=[{train: {epochs: 1}}]"])
    assert (out / "train-2").is_dir() and status(out)["status"] == "complete"
    (out / "notes.ipynb").write_text("{}")
    (out / "data").mkdir()
    (out / "data" / "table.csv").write_text("a,b\n")
    run(out)  # the new run has one training: the old run's second training folder goes, the user's files stay
    assert (out / "notes.ipynb").read_text() == "{}"
    assert (out / "data" / "table.csv").read_text() == "a,b\n"
    assert not (out / "train-2").exists()
    assert [row["stage"] for row in json.loads((out / "report.json").read_text())["stages"]] == ["train"]
    assert status(out)["status"] == "complete" and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("name", ["../x", "/tmp/abs", "a/b", "..", "x" * 300])
def test_a_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match="^name: a recipe name names its run folder"):
        run_recipe({**RECIPE, "name": name}, progress=False, show_table=False)
    assert list(tmp_path.iterdir()) == []


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_pid(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"status": "running"}\n')
    # this test's own process is alive: the folder is held
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(OptiforgeError, match=f"in use by another optiforge run \\(PID {os.getpid()} on"):
        run(out)
    assert status(out) == {"status": "running"}  # the other run's files are untouched
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_the_lock_of_a_process_that_no_longer_runs_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / "run.json").write_text('{"status": "running"}\n')
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    run(out, resume=True)
    assert status(out)["status"] == "complete"
    assert not (out / LOCK_NAME).exists()


def test_resume_removes_the_temporary_files_of_killed_writes(tmp_path):
    out = tmp_path / "run"
    run(out)
    left = [out / ".report.json.k2_9xq1a.tmp", out / "train" / ".checkpoint.pt.abcd1234.tmp"]
    for path in left:
        path.write_bytes(b"half")
    (out / ".mine.tmp").write_text("the user's")  # not a name atomic_write makes
    run(out, resume=True)
    assert not any(path.exists() for path in left)
    assert (out / ".mine.tmp").read_text() == "the user's"


def test_an_error_inside_a_stage_ends_in_run_json_with_the_reason(tmp_path, monkeypatch):
    def broken(model, config, ctx):
        raise OptiforgeError("the stage broke on purpose")

    monkeypatch.setitem(STAGES._items, "broken", StageKind("broken", STAGES.get("train").config, broken, "fails"))
    out = tmp_path / "run"
    with pytest.raises(OptiforgeError, match="broke on purpose"):
        run(out, ["stages=[broken]"])
    assert status(out)["status"] == "failed"
    assert status(out)["reason"] == "the stage broke on purpose"
    assert not (out / LOCK_NAME).exists()


def test_a_bug_or_ctrl_c_inside_the_run_also_ends_in_run_json_as_failed(tmp_path, monkeypatch):
    import optiforge.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(optiforge.runner, "measure", interrupted)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(out)
    assert status(out) == {"status": "failed", "reason": "interrupted", "folders": ["train", "export"]}


def test_a_read_only_folder_gives_one_error_line(tmp_path, monkeypatch, capsys):
    # chmod does not stop root, so the file system's refusal is simulated where every write goes through
    def read_only(path, write):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(optiforge.files, "atomic_write", read_only)
    out = tmp_path / "run"
    code = main(["run", "--set", "train.epochs=1", "--set", "model.hidden=[8]", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot write '{out / 'run.json'}': Read-only file system; the file system is read-only" in err
    assert "choose another --out" in err
    assert not (out / LOCK_NAME).exists()


def test_a_full_disk_during_training_names_the_file_and_marks_the_run_failed(tmp_path, monkeypatch):
    original = optiforge.files.atomic_write

    def full_for_checkpoints(path, write):
        if path.name == "checkpoint.pt":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, write)

    monkeypatch.setattr(optiforge.files, "atomic_write", full_for_checkpoints)
    out = tmp_path / "run"
    with pytest.raises(OptiforgeError, match="No space left on device; the disk is full; free some space"):
        run(out)
    assert status(out)["status"] == "failed" and "checkpoint.pt" in status(out)["reason"]


def test_a_busy_folder_is_refused_before_any_worker_starts(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"status": "running"}\n')
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    arguments = ["run", "--nproc", "2", "--set", "parallel.strategy=ddp", "--set", "model.hidden=[8]"]
    assert main([*arguments, "--out", str(out), "--no-progress"]) == 2
    assert f"(PID {os.getpid()} on {socket.gethostname()})" in capsys.readouterr().err
    assert sorted(path.name for path in out.iterdir()) == [LOCK_NAME, "run.json"]


def test_a_folder_of_other_files_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OptiforgeError, match="holds files \\(notes.txt\\) but no run.json"):
        run(out)
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
