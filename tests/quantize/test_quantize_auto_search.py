"""``engine: auto`` is a search: each engine a candidate, timed by the search's measurer against the float model."""

from __future__ import annotations

import pytest
import torch

from optiforge.quantization import QuantConfig, quantize_with_result
from optiforge.quantization.schemes import candidates
from optiforge.search import figures

# seconds per batch the fake clock gives the n-th candidate timed; the float model always takes 1 s
CANDIDATE_SECONDS = [4.0, 1.0, 2.0, 3.0, 5.0]


@pytest.fixture
def fake_clock(monkeypatch):
    timed: list[list[str]] = []

    def interleaved(runs, rounds=3, repeats=1, warmup=1, device=None, min_round_seconds=0.0):
        seconds = CANDIDATE_SECONDS[len(timed)]
        timed.append(list(runs))
        return {name: [1.0 if name.startswith("baseline") else seconds] * rounds for name in runs}

    monkeypatch.setattr(figures.timing, "interleaved", interleaved)
    return timed


def test_auto_ships_the_engine_the_search_timed_fastest_among_those_meeting_the_floor(fake_clock, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).eval()
    loader = [torch.randn(32, 16) for _ in range(4)]
    result = quantize_with_result(
        model, QuantConfig(scheme="int8_dynamic", engine="auto"), calibration=loader, output_dir=tmp_path
    )
    rows = result.candidates
    assert [row["engine"] for row in rows] == candidates("int8_dynamic")
    timed = [row for row in rows if row["target_met"]]
    assert len(timed) >= 2 and len(fake_clock) == len(timed)  # each engine meeting the floor, once
    assert all(names == ["baseline/0", "candidate/0"] for names in fake_clock)  # against the float model
    seconds = CANDIDATE_SECONDS[: len(timed)]
    assert [row["throughput_per_s"] for row in timed] == pytest.approx([256 / s for s in seconds])
    assert [row["speedup"] for row in timed] == pytest.approx([1 / s for s in seconds])
    assert result.engine == timed[seconds.index(min(seconds))]["engine"] and not result.baseline_kept
    assert "best samples/s at batch 256" in result.reason and "output cosine >= 0.99" in result.reason
    # only the shipped engine's files stay
    assert {path.name for path in tmp_path.iterdir()} <= {result.engine}
