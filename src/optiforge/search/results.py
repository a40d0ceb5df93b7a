"""``search.json`` and the front plot: every candidate, its figures, the front marked, the choice and why."""

from __future__ import annotations

import json
from pathlib import Path

from optiforge.bench.plots import plot_front
from optiforge.files import atomic_write_text
from optiforge.search.config import SearchConfig
from optiforge.search.engine import SearchResult
from optiforge.search.figures import OBJECTIVE_FIGURES


def search_summary(result: SearchResult, config: SearchConfig) -> dict:
    """The content of ``search.json``."""
    candidates = []
    for outcome in result.outcomes:
        row = outcome.row()
        row["on_front"] = outcome.spec.name in result.front and outcome.phase == "full"
        row["chosen"] = result.chosen is outcome
        candidates.append(row)
    figure, _, label = OBJECTIVE_FIGURES[config.objective]
    return {
        "objective": {"name": config.objective, "figure": figure, "label": label, "batch": config.timing_batch},
        "constraint": {
            "max_metric_drop": config.constraint.max_metric_drop,
            "min_fidelity": config.constraint.min_fidelity,
            "min_neighbours_kept": config.constraint.min_neighbours_kept,
        },
        "prefer": config.prefer,
        "baseline": result.baseline,
        "chosen": result.chosen.spec.name if result.chosen else "baseline",
        "baseline_kept": result.baseline_kept,
        "reason": result.selection.reason,
        "notes": result.notes,
        "front": result.front,
        "candidates": candidates,
        "invalid": result.invalid,
        "seconds": result.seconds,
        "stages_applied": result.applied_steps,
    }


def write_search(result: SearchResult, config: SearchConfig, folder: Path) -> tuple[Path, Path | None]:
    """Write ``search.json`` and ``search.png`` into ``folder``; the plot is ``None`` when nothing was measured."""
    summary = search_summary(result, config)
    path = atomic_write_text(folder / "search.json", json.dumps(summary, indent=1, default=str))
    points = [{"name": "baseline", **result.baseline}] + [
        {"name": row["name"], **row} for row in summary["candidates"] if row["phase"] == "full" and "value" in row
    ]
    metric = result.baseline.get("metric", "metric")
    figure, _, label = OBJECTIVE_FIGURES[config.objective]
    plot = plot_front(points, result.front, folder / "search.png", metric, (figure, label))
    return path, plot
