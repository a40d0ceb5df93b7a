"""The one selection policy: accept, rank, and the baseline when nothing is accepted."""

from __future__ import annotations

import time

import pytest

from optiforge.bench.selection import Candidate, select
from optiforge.bench.timing import interleaved, latency_ms, percentile, speedups, timed


def _pick(*candidates: Candidate, maximize: bool = True):
    return select(list(candidates), objective="samples/s", maximize=maximize, constraint="cosine >= 0.99")


def test_the_best_accepted_candidate_wins_not_the_best_overall():
    fast_unfaithful = Candidate("int8", objective=900.0, accepted=False)
    faithful = Candidate("bf16", objective=500.0, accepted=True)
    slower_faithful = Candidate("fp32", objective=100.0, accepted=True)
    selection = _pick(fast_unfaithful, slower_faithful, faithful)
    assert selection.chosen is faithful and not selection.baseline_kept
    assert "bf16" in selection.reason and "cosine >= 0.99" in selection.reason


def test_minimizing_picks_the_smallest_objective():
    small, large = Candidate("small", 1.0, True), Candidate("large", 5.0, True)
    assert _pick(large, small, maximize=False).chosen is small


def test_nothing_accepted_ships_the_baseline_and_says_why():
    selection = _pick(Candidate("int8", 900.0, False), Candidate("int4", 950.0, False))
    assert selection.chosen is None and selection.baseline_kept
    assert "no candidate met cosine >= 0.99" in selection.reason
    assert "the baseline ships unchanged" in selection.reason
    assert selection.summary()["chosen"] == "baseline"


def test_a_failed_candidate_is_never_chosen_and_its_error_is_reported():
    broken = Candidate("onnxruntime", objective=10_000.0, accepted=True, error="cannot export")
    working = Candidate("torch", objective=10.0, accepted=True)
    assert _pick(broken, working).chosen is working
    only_broken = _pick(broken)
    assert only_broken.baseline_kept and "onnxruntime failed: cannot export" in only_broken.reason


def test_an_accepted_candidate_without_a_measured_objective_is_not_ranked():
    unmeasured = Candidate("pt2e", objective=None, accepted=True)
    measured = Candidate("torch", objective=1.0, accepted=True)
    assert _pick(unmeasured, measured).chosen is measured


def test_timing_percentiles_and_speedups():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert latency_ms([0.001, 0.002, 0.003]) == {"p50": pytest.approx(2.0), "p95": pytest.approx(3.0)}
    assert speedups({"float": [2.0, 2.0], "int8": [0.5, 0.5]}, "float") == {"float": 1.0, "int8": 4.0}
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=2, warmup=1)
    # warm-up once each, then the rounds alternate a, b, a, b: a load change lands on both
    assert calls == ["a", "b", "a", "b", "a", "b"] and len(times["a"]) == len(times["b"]) == 2
    assert len(timed(lambda: None, repeats=3, warmup=2)) == 3


def test_short_calls_are_timed_in_bursts_that_still_alternate():
    order: list[str] = []

    def slow():
        order.append("slow")
        time.sleep(0.004)

    def quick():
        order.append("quick")

    times = interleaved({"slow": slow, "quick": quick}, rounds=3, warmup=1, min_round_seconds=0.01)
    # a quick call is repeated until its turn lasts about 10 ms; a 4 ms call two or three times
    assert len(times["quick"]) > 10 * len(times["slow"]) and len(times["slow"]) in (6, 9)
    turns = [name for index, name in enumerate(order) if index == 0 or order[index - 1] != name]
    assert turns[-6:] == ["slow", "quick"] * 3  # each round still times both sides in turn
