"""The one place that times code: timed calls, interleaved rounds, percentiles.

Every figure optiforge reports in milliseconds or samples per second comes
from here, so figures taken by the runner, by a search and by a benchmark
compare. :func:`interleaved` times several callables in turn, round after
round, so that a change of load on the machine (another process taking a
core) slows every side alike and the ratios between them stay fair.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping

import torch


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()  # CUDA launches are asynchronous: wait for the work itself


def timed(run: Callable[[], object], repeats: int, warmup: int = 0, device: torch.device | None = None) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``run()``, after ``warmup`` untimed calls.

    >>> times = timed(lambda: sum(range(1000)), repeats=3, warmup=1)
    >>> len(times), all(seconds > 0 for seconds in times)
    (3, True)
    """
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        run()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.95 = p95) of ``values``.

    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5), percentile(list(range(101)), 0.95)
    (3.0, 95)
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def latency_ms(seconds: list[float]) -> dict[str, float]:
    """``{"p50": ..., "p95": ...}`` in milliseconds from per-call seconds."""
    return {"p50": statistics.median(seconds) * 1000.0, "p95": percentile(seconds, 0.95) * 1000.0}


def interleaved(
    runs: Mapping[str, Callable[[], object]],
    rounds: int = 3,
    repeats: int = 1,
    warmup: int = 1,
    device: torch.device | None = None,
    min_round_seconds: float = 0.0,
) -> dict[str, list[float]]:
    """Seconds per call of every callable in ``runs``, timed in turn.

    Each round calls every callable ``repeats`` times, one after the other,
    so a burst of load lands on all of them instead of on one. Returns, per
    name, the timings of every call. ``min_round_seconds`` raises a callable's
    calls per round until its turn lasts about that long: a call of well under
    a millisecond timed right after another runtime's call measures the hand-over
    between the two thread pools (each spinning down while the other starts),
    not the call as a deployed model repeats it.

    >>> times = interleaved({"a": lambda: sum(range(100)), "b": lambda: sum(range(10))}, rounds=2)
    >>> sorted(times), len(times["a"])
    (['a', 'b'], 2)
    """
    calls = dict.fromkeys(runs, repeats)
    for name, run in runs.items():
        for _ in range(warmup):
            run()
        if min_round_seconds > 0:
            once = min(timed(run, 3, 0, device))
            calls[name] = max(repeats, min(10_000, math.ceil(min_round_seconds / max(once, 1e-7))))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name] += timed(run, calls[name], 0, device)
    return times


def speedups(times: Mapping[str, list[float]], reference: str) -> dict[str, float]:
    """Total time of ``reference`` over each entry's total time (> 1 is faster than the reference).

    >>> speedups({"float": [2.0, 2.0], "int8": [1.0, 1.0]}, "float")
    {'float': 1.0, 'int8': 2.0}
    """
    base = sum(times[reference])
    return {name: base / sum(values) for name, values in times.items()}


def per_second(count: int, seconds: list[float]) -> float:
    """Items per second from per-call seconds (the median call), e.g. samples per second at a batch."""
    return count / statistics.median(seconds)
