"""Mixed precision as a search: candidate k keeps the k most sensitive layers float; the fewest meeting the target
ships.

Each k is a ``quantize`` candidate with ``layers.float_most_sensitive: k``, from ``first`` to one short of
every layer (a model with no layer quantized is the float model, the search's baseline, which ships with
the search's reason when no k meets the target). The measurer gives each k's fidelity to the float model
and ranks by k, fewest first; the search walks the k in order and stops at the first that meets the target
(``effort.stop_at_first_accepted``), so larger k are never built.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from optiforge.bench.selection import select
from optiforge.quantization.config import QuantConfig
from optiforge.quantization.fidelity import Fidelity
from optiforge.quantization.fidelity_measurer import FidelityMeasurer
from optiforge.quantization.sensitivity import most_sensitive_float
from optiforge.quantization.targets import target, target_text
from optiforge.search import CandidateSpec, Search, SearchConfig, Step, StepResult

OBJECTIVE = ("layers_kept_float", False, "layers kept float")

Build = Callable[[nn.Module, list[str]], nn.Module]  # (float model, layers kept float) -> quantized model
Evaluate = Callable[[nn.Module], Fidelity]


@dataclass
class KeptFloat:
    """One k built: the model, the layers it keeps float and its fidelity."""

    count: int
    model: nn.Module
    float_layers: list[str]
    fidelity: Fidelity
    target_met: bool


@dataclass
class MixedPrecision:
    """The k built (report rows, in order), the chosen one (``None``: the float model ships) and why."""

    rows: list[dict]
    chosen: KeptFloat | None
    reason: str


class KeptFloatMeasurer(FidelityMeasurer):
    """Each k's fidelity, ranked by k (fewest layers kept float first); nothing is timed."""

    @property
    def objective(self) -> tuple[str, bool, str]:
        return OBJECTIVE

    def figures(self, model: Any, artifact: Path | None, name: str) -> dict:
        figures = self.fidelity_figures(model, name)
        if model is not self.baseline:
            figures[OBJECTIVE[0]] = self.measured[name].count
        return figures


def _with_count(config: QuantConfig, count: int) -> QuantConfig:
    return config.model_copy(update={"layers": config.layers.model_copy(update={"float_most_sensitive": count})})


def mixed_precision(
    model: nn.Module,
    config: QuantConfig,
    build: Build,
    evaluate: Evaluate,
    ranked: list[str],
    excluded: list[str],
    *,
    first: int,
    accuracy: float | None,
    folder: Path,
) -> MixedPrecision:
    """Search k = ``first``, ``first`` + 1, … (the first k of ``ranked`` kept float with ``excluded``) for the
    fewest that meets ``config``'s target; ``accuracy``: the float model's, on labelled batches."""
    max_metric_drop, min_fidelity = target(config)
    counts = range(first, len(ranked))
    names = {count: f"{count} float" for count in counts}
    if not counts:  # the k already kept float leave no layer to add
        nothing = select([], objective=OBJECTIVE[2], maximize=False, constraint=target_text(config))
        return MixedPrecision([], None, nothing.reason)
    search_config = SearchConfig(
        candidates=[[{"quantize": {"layers": {"float_most_sensitive": count}}}] for count in counts],
        objective="size",  # ranked by the measurer's own figure, the layers kept float
        constraint={"max_metric_drop": max_metric_drop, "min_fidelity": min_fidelity},
        effort={"stop_at_first_accepted": True},
    )
    specs = [CandidateSpec(names[count], (Step("quantize", _with_count(config, count)),)) for count in counts]
    kept: dict[str, KeptFloat] = {}

    def apply_step(float_model: nn.Module, step: Step, step_folder: Path, input_key: str) -> StepResult:
        count = step.config.layers.float_most_sensitive
        float_layers = most_sensitive_float(ranked, excluded, count)
        quantized = build(float_model, float_layers)
        fidelity = evaluate(quantized)
        met = fidelity.meets(max_metric_drop, min_fidelity)
        kept[names[count]] = KeptFloat(count, quantized, float_layers, fidelity, met)
        return StepResult(quantized, info={"float_layers": float_layers})

    def measurer(baseline: nn.Module) -> KeptFloatMeasurer:
        return KeptFloatMeasurer(baseline, search_config, None, kept, accuracy)

    search_folder = folder / "mixed_precision"
    search = Search(
        search_config,
        None,
        None,
        apply_step,
        search_folder,
        progress=False,
        measurer=measurer,
        save_artifact=lambda built, path: None,
    )
    result = search.run(model, specs)
    shutil.rmtree(search_folder, ignore_errors=True)  # the figures are in the rows
    rows = []
    for outcome in result.outcomes:
        if outcome.skipped:
            continue  # after the first k meeting the target: never built
        count = outcome.spec.steps[0].config.layers.float_most_sensitive
        tried = kept.get(outcome.spec.name)
        row: dict[str, Any] = {"name": outcome.spec.name, "objective": float(count), "accepted": False}
        if tried is not None:
            row |= {"accepted": tried.target_met, "float_layers": tried.float_layers, **tried.fidelity.as_dict()}
        if outcome.error:
            row["error"] = outcome.error
        rows.append(row)
    chosen = kept[result.chosen.spec.name] if result.chosen else None
    return MixedPrecision(rows, chosen, result.selection.reason)
