"""The Pareto front on hand-made figures: dominated points out, ties kept, failures never on it."""

from __future__ import annotations

from optiforge.bench.selection import Candidate, pareto_front

KEYS = [("accuracy", True), ("latency_ms", False)]


def _point(name: str, accuracy: float, latency_ms: float, error: str | None = None) -> Candidate:
    return Candidate(name, figures={"accuracy": accuracy, "latency_ms": latency_ms}, error=error)


def _names(points: list[Candidate]) -> list[str]:
    return [point.name for point in pareto_front(points, KEYS)]


def test_dominated_points_are_left_out_and_the_rest_keep_their_order():
    points = [
        _point("float", 0.98, 10.0),
        _point("int8", 0.97, 4.0),
        _point("pruned-slow", 0.96, 6.0),  # int8 is better on both
        _point("pruned-int8", 0.90, 2.0),
        _point("worse-everywhere", 0.89, 11.0),
    ]
    assert _names(points) == ["float", "int8", "pruned-int8"]


def test_equal_figures_are_both_on_the_front_but_a_tie_on_one_figure_is_broken_by_the_other():
    points = [_point("a", 0.95, 5.0), _point("b", 0.95, 5.0), _point("c", 0.95, 6.0), _point("d", 0.94, 5.0)]
    assert _names(points) == ["a", "b"]


def test_failed_and_unmeasured_candidates_are_never_on_the_front():
    points = [
        _point("broken", 0.99, 1.0, error="stage failed"),
        Candidate("no-latency", figures={"accuracy": 0.99, "latency_ms": None}),
        _point("ok", 0.90, 9.0),
    ]
    assert _names(points) == ["ok"]


def test_which_way_is_better_follows_each_key():
    points = [_point("fast", 0.9, 1.0), _point("slow", 0.9, 9.0)]
    assert [p.name for p in pareto_front(points, [("accuracy", True), ("latency_ms", True)])] == ["slow"]
