"""Per-layer sensitivity: the ranking that ``layers.float_most_sensitive`` and mixed precision choose from.

Sensitivity quantizes one layer at a time (every other layer float) and
measures the error that layer alone causes. ``layers.float_most_sensitive: k``
keeps the k most sensitive layers in float (:func:`most_sensitive_float`);
mixed precision searches that k (:mod:`optiforge.quantization.mixed_precision`).
A ranking depends on the model, the quantization settings and the data, never
on k, so callers trying several k pass a ``rankings`` cache and rank once.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optiforge.files import atomic_write, atomic_write_text
from optiforge.quantization.fidelity import Fidelity

Build = Callable[[list[str]], Any]  # float layers → quantized model
Evaluate = Callable[[Any], Fidelity]


def layer_sensitivity(build: Build, evaluate: Evaluate, layers: list[str], excluded: list[str]) -> list[dict]:
    """One row per layer, most sensitive first: the error with only that layer quantized."""
    rows = []
    for layer in layers:
        fidelity = evaluate(build([other for other in layers if other != layer] + excluded))
        rows.append({"layer": layer, **fidelity.as_dict(), "rank": fidelity.error()})
    rows.sort(key=lambda row: row.pop("rank"), reverse=True)
    return rows


def most_sensitive_float(ranked: list[str], excluded: list[str], count: int) -> list[str]:
    """The layers kept float when the ``count`` most sensitive of ``ranked`` join ``excluded``."""
    return excluded + [layer for layer in ranked[:count] if layer not in excluded]


def cached_sensitivity(
    rankings: dict | None, key: str, build: Build, evaluate: Evaluate, layers: list[str], excluded: list[str]
) -> list[dict]:
    """:func:`layer_sensitivity`, read from ``rankings[key]`` when an earlier call on the same model and
    settings computed it (``rankings`` ``None``: computed every time)."""
    if rankings is not None and key in rankings:
        return rankings[key]
    rows = layer_sensitivity(build, evaluate, layers, excluded)
    if rankings is not None:
        rankings[key] = rows
    return rows


def write_sensitivity(rows: list[dict], folder: Path, title: str) -> list[Path]:
    """``sensitivity.json``, ``sensitivity.md`` and a bar plot ``sensitivity.png`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(folder / "sensitivity.json", json.dumps(rows, indent=2) + "\n")]
    lines = ["| layer | metric drop | agreement | output cosine | relative error |", "|---|---|---|---|---|"]
    for row in rows:
        drop = "" if row["metric_drop"] is None else f"{row['metric_drop'] * 100:+.2f} pt"
        agreement = "" if row["agreement"] is None else f"{row['agreement']:.4f}"
        lines.append(f"| {row['layer']} | {drop} | {agreement} | {row['cosine']:.5f} | {row['relative_error']:.4f} |")
    written.append(atomic_write_text(folder / "sensitivity.md", f"# {title}\n\n" + "\n".join(lines) + "\n"))
    written.append(_plot(rows, folder / "sensitivity.png", title))
    return written


def _plot(rows: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["layer"] for row in rows]
    panels = [("1 - output cosine", [max(1 - row["cosine"], 1e-9) for row in rows], "log")]
    if all(row["metric_drop"] is not None for row in rows):
        panels.insert(0, ("accuracy drop (points)", [row["metric_drop"] * 100 for row in rows], "linear"))
    width = max(4.0, 0.5 * len(rows) + 2)
    figure, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.8), squeeze=False)
    for axis, (label, values, scale) in zip(axes[0], panels, strict=True):
        axis.bar(range(len(rows)), values, color="tab:orange")
        axis.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=8)
        axis.set(xlabel="layer quantized alone", ylabel=label, yscale=scale)
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return atomic_write(path, lambda file: file.write(buffer.getvalue()))
