"""The command line: one-line errors with exit code 2, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optiforge.cli import COMMANDS, main, parser

HELPERS = str(Path(__file__).parents[1] / "helpers")


def run_cli(*args, cwd=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=HELPERS + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "optiforge.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["run", "--set", "train.optimzer.lr=1"], "unknown field 'train.optimzer' (did you mean 'optimizer'?)"),
        (["run", "--set", "train.epochs=lots"], "train.epochs: Input should be a valid integer"),
        (["run", "nowhere.yaml"], "no recipe file 'nowhere.yaml'"),
        (["run", "--set", "data.factory=nosuchpkg.data:load"], "cannot import module 'nosuchpkg.data'"),
        (["run", "--set", "model={name: cnn1d}"], "cnn1d needs inputs of shape (channels, length)"),
        (["run", "--set", "stages=[{prune_all: {}}]"], "unknown stage kind 'prune_all'"),
    ],
)
def test_user_mistakes_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, pattern):
    out = tmp_path / "run"
    code = main([*args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert pattern in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_every_command_has_help():
    names = set(COMMANDS)
    assert {"run", "recipes", "lr-find", "validate", "copy", "report"} <= names
    for name in names:
        with pytest.raises(SystemExit) as exit_info:
            parser().parse_args([name, "--help"])
        assert exit_info.value.code == 0


def test_recipes_lists_builtins_with_descriptions(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    quickstart = next(line for line in lines if line.startswith("quickstart"))
    assert "digits" in quickstart


def test_validate_and_copy(tmp_path, capsys):
    assert main(["validate", "mnist1d", "--set", "train.epochs=1"]) == 0
    assert "is valid" in capsys.readouterr().out
    target = tmp_path / "mine.yaml"
    assert main(["copy", "quickstart", str(target)]) == 0
    assert "name: quickstart" in target.read_text()
    assert main(["copy", "quickstart", str(target)]) == 2  # never overwrites


def test_run_writes_report_and_refuses_foreign_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--set", "train.epochs=1", "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["stages"][0]["stage"] == "train"
    assert "optiforge · quickstart" in capsys.readouterr().out
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["run", "--set", "train.epochs=1", "--out", str(foreign)]) == 2
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_lr_find_writes_plot_and_suggests_rate(tmp_path, capsys):
    plot = tmp_path / "lr.png"
    assert main(["lr-find", "--steps", "40", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "suggested learning rate" in out and plot.stat().st_size > 1000
    rate = float(out.split("suggested learning rate: ")[1].split()[0])
    assert 1e-5 <= rate <= 10


def test_cli_entry_point_runs_as_a_process(tmp_path):
    result = run_cli("run", "--set", "train.epochs=1", "--set", "nope=1", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("optiforge: error: unknown field 'nope'")
