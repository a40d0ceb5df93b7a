"""Pruning sensitivity: prune each layer alone at several ratios, then share out a global target.

The per-layer curves (metric against ratio) show which layers tolerate
pruning; :func:`allocate` picks per-layer ratios that remove the target share
of weights with the least total metric loss, greedily taking the cheapest
loss per removed parameter first (losses of layers are assumed to add up).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from optiforge.compress.common import chosen_layers
from optiforge.compress.config import PruneConfig
from optiforge.compress.pruning import prune
from optiforge.config import FinetuneConfig
from optiforge.data.builtin import TaskData
from optiforge.data.loaders import make_loader
from optiforge.errors import ConfigError
from optiforge.files import atomic_write_text
from optiforge.models.builtin import count_parameters
from optiforge.tasks import Task, task_for

DEFAULT_RATIOS = (0.1, 0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


@dataclass
class Sensitivity:
    """Curves of one analysis and, when a target was given, the ratios that meet it."""

    metric: str
    higher_is_better: bool
    baseline: float
    ratios: list[float]
    curves: dict[str, list[float]]  # layer → metric at each ratio
    removed: dict[str, list[int]]  # layer → parameters removed at each ratio
    total: int  # parameters the target is a share of
    target: float | None = None
    layer_sparsity: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")


def _loss(sensitivity: Sensitivity, value: float) -> float:
    change = sensitivity.baseline - value if sensitivity.higher_is_better else value - sensitivity.baseline
    return max(0.0, change)


def analyze(
    model: nn.Module,
    data: TaskData,
    config: PruneConfig | None = None,
    ratios: tuple[float, ...] | list[float] = DEFAULT_RATIOS,
    task: Task | None = None,
    progress: Callable[[str], None] | None = None,
) -> Sensitivity:
    """Prune each selectable layer alone at each ratio (one-shot) and evaluate on the validation split."""
    config = config or PruneConfig()
    for ratio in ratios:
        if not 0.0 < ratio < 1.0:
            raise ConfigError(f"sensitivity ratios must be in (0, 1), got {ratio}")
    task = task or task_for(data.task)
    split = data.val if len(data.val) else data.test
    loader = make_loader(split, 512)
    device = next(model.parameters()).device
    structured = config.method == "structured"
    layers = list(
        chosen_layers(model, config.layers, "structured pruning") if structured else config.layers.select(model)
    )
    params_before, nonzero_before = count_parameters(model)
    base = config.model_copy(
        update={
            "sparsity": 0.0,
            "scope": "layer",
            "schedule": None,
            "finetune": FinetuneConfig(),
            "layer_sparsity": None,
            "structured": config.structured.model_copy(update={"iterative_steps": 1}),
        }
    )
    baseline = task.evaluate(model, loader, device)[task.primary_metric]
    curves: dict[str, list[float]] = {}
    removed: dict[str, list[int]] = {}
    for name in layers:
        curves[name], removed[name] = [], []
        for ratio in ratios:
            if progress is not None:
                progress(f"{name} at {ratio:.2f}")
            trial = prune(copy.deepcopy(model), base.model_copy(update={"layer_sparsity": {name: ratio}}), data)
            params, nonzero = count_parameters(trial)
            curves[name].append(task.evaluate(trial, loader, device)[task.primary_metric])
            removed[name].append(params_before - params if structured else nonzero_before - nonzero)
    if structured:
        total = params_before
    else:
        total = sum(dict(model.named_modules())[name].weight.numel() for name in layers)
    return Sensitivity(task.primary_metric, task.higher_is_better, baseline, list(ratios), curves, removed, total)


def allocate(sensitivity: Sensitivity, target: float) -> dict[str, float]:
    """Per-layer ratios removing at least ``target`` of the parameters with the least summed metric loss."""
    if not 0.0 <= target < 1.0:
        raise ConfigError(f"sensitivity target must be in [0, 1), got {target}")
    goal = target * sensitivity.total
    level = {name: -1 for name in sensitivity.curves}  # index into ratios; -1 = not pruned

    def removed(name: str) -> int:
        return 0 if level[name] < 0 else sensitivity.removed[name][level[name]]

    def loss(name: str) -> float:
        return 0.0 if level[name] < 0 else _loss(sensitivity, sensitivity.curves[name][level[name]])

    while sum(removed(name) for name in level) < goal:
        best: tuple[float, int, str, int] | None = None
        for name in level:
            for index in range(level[name] + 1, len(sensitivity.ratios)):
                gained = sensitivity.removed[name][index] - removed(name)
                if gained <= 0:
                    continue
                cost = (_loss(sensitivity, sensitivity.curves[name][index]) - loss(name)) / gained
                candidate = (cost, -gained, name, index)
                if best is None or candidate < best:
                    best = candidate
        if best is None:
            reachable = sum(removed(name) for name in level) / max(sensitivity.total, 1)
            raise ConfigError(
                f"sensitivity: target {target} cannot be met with ratios up to "
                f"{max(sensitivity.ratios)} (at most {reachable:.3f}); add higher --ratios"
            )
        level[best[2]] = best[3]
    sensitivity.target = target
    sensitivity.layer_sparsity = {
        name: (0.0 if index < 0 else sensitivity.ratios[index]) for name, index in level.items()
    }
    return sensitivity.layer_sparsity


def plot(sensitivity: Sensitivity, path: str | Path) -> Path:
    """Metric against ratio, one line per layer, the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, values in sensitivity.curves.items():
        axes.plot(sensitivity.ratios, values, marker="o", label=name)
    axes.axhline(sensitivity.baseline, color="grey", linestyle="--", label="unpruned")
    axes.set_xlabel("share of the layer pruned")
    axes.set_ylabel(f"validation {sensitivity.metric}")
    axes.set_title("pruning sensitivity per layer")
    axes.legend(fontsize="small")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
