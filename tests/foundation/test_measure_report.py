"""Measurement figures and the report.json contract."""

from __future__ import annotations

import json

import torch

import optiforge
from optiforge.bench.memory import peak_forward_bytes
from optiforge.bench.report import CONTRACT_KEYS


def test_measure_counts_reads_file_size_and_times(tmp_path, digits, small_mlp):
    path = tmp_path / "m.pt"
    torch.save(small_mlp.state_dict(), path)
    with torch.no_grad():
        small_mlp[1].weight[:5] = 0
    figures = optiforge.measure(
        small_mlp, digits, artifact=path, config=optiforge.MeasureConfig(latency_repeats=5, throughput_repeats=2)
    )
    assert figures.params == 64 * 32 + 32 + 32 * 10 + 10
    assert figures.nonzero_params == figures.params - 5 * 64
    assert figures.size_bytes == path.stat().st_size
    assert 0 < figures.latency_ms["p50"] <= figures.latency_ms["p95"]
    assert figures.throughput_per_s > 0
    assert 0 <= figures.value <= 1 and figures.metric == "accuracy"


def test_peak_memory_tracks_live_activations():
    small = peak_forward_bytes(lambda: torch.ones(1000) * 2, torch.device("cpu"))
    large = peak_forward_bytes(lambda: torch.ones(100_000) * 2, torch.device("cpu"))
    assert 4000 <= small < 20_000
    assert 400_000 <= large < 1_000_000


def test_report_contract_keys_and_files(tmp_path):
    result = optiforge.run_recipe("quickstart", ["train.epochs=2"], out=tmp_path, progress=False, show_table=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["recipe"] == "quickstart"
    assert {"torch", "device", "threads"} <= set(report["environment"])
    # the environment is this process's: the torch that ran and its thread count
    assert report["environment"]["torch"] == torch.__version__.split("+")[0]
    assert report["environment"]["threads"] == torch.get_num_threads()
    row = report["stages"][0]
    assert set(CONTRACT_KEYS) <= set(row)
    assert {"batch", "p50", "p95"} <= set(row["latency_ms"])
    assert row["size_bytes"] == (tmp_path / row["artifact"]).stat().st_size
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# optiforge report: quickstart")
    assert "= None" not in markdown  # an unset figure (no compile time for an eager model) is not listed
    assert "epochs = 2" in markdown
    assert (tmp_path / "training_curves.png").stat().st_size > 1000
    assert result.report["stages"][0]["value"] == row["value"]


def test_stages_run_in_order_and_each_is_measured(tmp_path):
    recipe = {"name": "two", "train": {"epochs": 1}, "stages": [{"train": {"epochs": 1}}, {"train": {"epochs": 2}}]}
    result = optiforge.run_recipe(recipe, out=tmp_path, progress=False, show_table=False)
    assert [row["stage"] for row in result.report["stages"]] == ["train", "train-2", "train-3"]
    assert (tmp_path / "train-3" / "model.pt").is_file()
