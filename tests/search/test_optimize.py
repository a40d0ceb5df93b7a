"""``optiforge optimize`` and ``optiforge.optimize``: the space shown without running, a small search end to end."""

from __future__ import annotations

import json

import pytest

import optiforge
from optiforge.cli import main
from optiforge.config import MeasureConfig
from optiforge.errors import ConfigError

FAST_MEASURE = MeasureConfig(latency_repeats=1, warmup=0, throughput_batch=8, throughput_repeats=1)
FAST = ["--set", "measure.latency_repeats=1", "--set", "measure.warmup=0", "--set", "measure.throughput_batch=8"]


def test_dry_run_prints_the_default_space_and_its_cost(capsys):
    assert main(["optimize", "quickstart", "--dry-run", "--objective", "size"]) == 0
    printed = capsys.readouterr().out
    assert "objective size" in printed and "classifier" in printed
    assert "share(clusters=16" in printed and "prune(method=magnitude, sparsity=0.95" in printed
    assert "unchanged" in printed
    cost = next(line for line in printed.splitlines() if line.startswith("cost:"))
    assert "without prefix sharing" in cost and "fine-tuning epochs" in cost


def test_dry_run_of_a_latency_search_leaves_weight_sharing_out(capsys):
    assert main(["optimize", "quickstart", "--dry-run"]) == 0
    assert "share(" not in capsys.readouterr().out


@pytest.mark.slow  # two runs, a training and a search: about 6 s of CPU
def test_optimize_a_finished_run_writes_the_front_and_ships_a_candidate(tmp_path, capsys, one_thread):
    run = tmp_path / "run"
    recipe = ["--set", "train.epochs=2", "--set", "model.hidden=[16]", *FAST]
    assert main(["run", "quickstart", "--out", str(run), "--no-progress", *recipe]) == 0
    space = tmp_path / "space.yaml"
    space.write_text(
        # bf16 by name (engine: torch casts even where the CPU lacks bf16 units; auto would refuse there)
        "options: {quantize: [none, {scheme: bf16, engine: torch}]}\n"
        "timing: {rounds: 1, measure: {latency_repeats: 1, warmup: 0, throughput_batch: 8, throughput_repeats: 1}}\n"
    )
    out = tmp_path / "optimized"
    arguments = ["optimize", str(run), "--space", str(space), "--objective", "size", "--batch", "8", "--out", str(out)]
    assert main([*arguments, "--no-progress", "--max-drop", "0.05"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert [row["stage"] for row in report["stages"]] == ["baseline", "search"]
    assert report["stages"][0]["value"] == json.loads((run / "report.json").read_text())["stages"][0]["value"]
    search = json.loads((out / "search" / "search.json").read_text())
    bf16 = "quantize(scheme=bf16, engine=torch)"
    assert {row["name"] for row in search["candidates"]} == {"unchanged", bf16}
    # bf16 halves the bytes and keeps the metric within 0.05: the front's smallest point ships
    assert search["chosen"] == bf16 and bf16 in search["front"]
    assert report["stages"][1]["size_bytes"] < report["stages"][0]["size_bytes"]
    assert (out / "search" / "search.png").is_file()
    assert f"shipped: {bf16}" in capsys.readouterr().out


def test_a_run_whose_last_artefact_is_not_a_float_state_dict_is_refused(tmp_path, capsys):
    (tmp_path / "report.json").write_text(
        json.dumps({"stages": [{"stage": "quantize", "artifact": "quantize/model-int8.pt"}], "config": {}})
    )
    assert main(["optimize", str(tmp_path), "--dry-run"]) == 2
    assert "not a float state dict" in capsys.readouterr().err


def test_the_python_optimize_returns_the_shipped_model_and_the_search(digits, tmp_path, one_thread):
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16]), digits)
    space = {"options": {"quantize": [{"scheme": "int8_dynamic", "engine": "torch"}]}, "objective": "size"}
    space["constraint"] = {"max_metric_drop": 1.0}
    timing = {"measure": FAST_MEASURE.model_dump(), "rounds": 1}
    result = optiforge.optimize(model, digits, search={**space, "timing": timing}, out=tmp_path, progress=False)
    assert not result.baseline_kept and result.model is not model
    assert result.artifact is not None and result.artifact.stat().st_size < result.search.baseline["size_bytes"]
    assert (tmp_path / "search" / "search.json").is_file()


def test_the_python_optimize_refuses_an_empty_space(digits, tmp_path):
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16]), digits)
    with pytest.raises(ConfigError, match="space is empty"):
        optiforge.optimize(model, digits, search={}, out=tmp_path, progress=False)
