"""One-epoch recipe runs on tiny data, measured with few repeats."""

from __future__ import annotations

from pathlib import Path

MEASURE = {"latency_repeats": 2, "warmup": 0, "throughput_batch": 8, "throughput_repeats": 1}


def run_small(data: dict, model: dict, out: Path, **sections) -> dict:
    """``run_recipe`` with ``train.epochs=1``; returns the report."""
    import optiforge

    recipe = {"name": "sources", "data": data, "model": model, "measure": MEASURE, "train": {"batch_size": 8}}
    result = optiforge.run_recipe({**recipe, **sections}, ["train.epochs=1"], out=out, progress=False, show_table=False)
    return result.report
