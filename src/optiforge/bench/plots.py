"""Plots for the run directory (matplotlib, headless)."""

from __future__ import annotations

import io
from pathlib import Path

from optiforge.files import atomic_write


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:  # noqa: ANN001
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _figure().close(figure)
    return atomic_write(path, lambda file: file.write(buffer.getvalue()))


def plot_training_curves(histories: dict[str, list[dict]], path: Path, metric: str) -> Path | None:
    """Loss and validation metric per epoch, one line per training stage."""
    histories = {name: history for name, history in histories.items() if history}
    if not histories:
        return None
    plt = _figure()
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, history in histories.items():
        epochs = [row["epoch"] for row in history]
        loss_axis.plot(epochs, [row["train_loss"] for row in history], label=f"{name} train")
        if "val_loss" in history[0]:
            loss_axis.plot(epochs, [row["val_loss"] for row in history], "--", label=f"{name} val")
        if f"val_{metric}" in history[0]:
            metric_axis.plot(epochs, [row[f"val_{metric}"] for row in history], label=name)
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    metric_axis.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return _save(figure, path)


def plot_tradeoff(rows: list[dict], path: Path) -> Path | None:
    """Metric against size on disk and against latency, one point per stage."""
    rows = [row for row in rows if row.get("value") is not None and row.get("size_bytes")]
    if not rows:
        return None
    plt = _figure()
    figure, (size_axis, latency_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for row in rows:
        size_axis.scatter(row["size_bytes"] / 1000, row["value"])
        size_axis.annotate(row["stage"], (row["size_bytes"] / 1000, row["value"]), fontsize=8)
        latency_axis.scatter(row["latency_ms"]["p50"], row["value"])
        latency_axis.annotate(row["stage"], (row["latency_ms"]["p50"], row["value"]), fontsize=8)
    size_axis.set(xlabel="size on disk (KB)", ylabel=rows[0]["metric"], title="metric vs size", xscale="log")
    latency_axis.set(xlabel="latency p50 at batch 1 (ms)", ylabel=rows[0]["metric"], title="metric vs latency")
    for axis in (size_axis, latency_axis):
        axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_series(
    series: dict[str, tuple[list[float], list[float]]],
    path: Path,
    xlabel: str,
    ylabel: str,
    title: str,
    xscale: str = "linear",
    marker: float | None = None,
) -> Path:
    """A general line plot (used by the LR finder and sensitivity analyses)."""
    plt = _figure()
    figure, axis = plt.subplots(figsize=(6.5, 4))
    for label, (xs, ys) in series.items():
        axis.plot(xs, ys, label=label)
    if marker is not None:
        axis.axvline(marker, color="red", linestyle="--", label=f"suggested {marker:.3g}")
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale=xscale)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_front(
    points: list[dict], front: list[str], path: Path, metric: str, objective: tuple[str, str] | None = None
) -> Path | None:
    """Metric against latency and against size (and against ``objective`` = (figure, label) when it is
    neither), one point per candidate (``name``, ``value`` and the figures), the front drawn as a line."""
    points = [point for point in points if point.get("value") is not None]
    if not points:
        return None
    axes_figures = [("latency_ms", "latency p50 (ms)"), ("size_bytes", "size on disk (bytes)")]
    if objective is not None and objective[0] not in dict(axes_figures):
        axes_figures.append(objective)
    plt = _figure()
    figure, axes = plt.subplots(1, len(axes_figures), figsize=(5 * len(axes_figures), 3.8))
    for axis, (key, label) in zip(axes, axes_figures, strict=True):
        shown = [point for point in points if point.get(key) is not None]
        axis.scatter([p[key] for p in shown], [p["value"] for p in shown], color="grey", s=14, label="candidates")
        on_front = sorted((p for p in shown if p["name"] in front), key=lambda p: p[key])
        if on_front:
            xs, ys = [p[key] for p in on_front], [p["value"] for p in on_front]
            front_label = f"front ({objective[1].split(' (')[0]})" if objective else "front"
            axis.plot(xs, ys, "o-", color="tab:red", label=front_label)
            for point in on_front:
                axis.annotate(point["name"], (point[key], point["value"]), fontsize=6)
        baseline = [p for p in shown if p["name"] == "baseline"]
        if baseline:
            axis.scatter([baseline[0][key]], [baseline[0]["value"]], marker="*", s=90, color="black", label="baseline")
        axis.set(xlabel=label, ylabel=metric, title=f"{metric} vs {label.split(' (')[0]}")
        if key == "size_bytes":
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return _save(figure, path)
