"""``engine: auto`` as a search: one candidate per installed engine, measured against the float model.

Each candidate is one engine's attempt (:func:`~optiforge.quantization.attempts.attempt_engine`: built, checked,
fidelity measured, mixed precision when a target is missed). The
:class:`~optiforge.quantization.fidelity_measurer.FidelityMeasurer` gives the search
its figures: fidelity to the float model's outputs on the validation batches and, for a candidate that
meets the target, samples per second at batch 256, timed interleaved with the float model (the others
can never be chosen, so they are not timed: a slow, unfaithful engine would otherwise dominate the
stage's time). The search's policy keeps the fastest that meets the target, and only its folder stays;
the float model ships when none does, and every engine's files stay to show why.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.errors import OptiforgeError
from optiforge.quantization.attempts import Attempt, attempt_engine
from optiforge.quantization.builders import Job
from optiforge.quantization.fidelity_measurer import FidelityMeasurer, float_accuracy
from optiforge.quantization.targets import target
from optiforge.search import CandidateSpec, Search, SearchConfig, Step, StepResult

THROUGHPUT_BATCH = 256


def _rows(tensor: torch.Tensor) -> torch.Tensor:
    repeats = -(-THROUGHPUT_BATCH // tensor.shape[0])
    return tensor.repeat(repeats, *([1] * (tensor.dim() - 1)))[:THROUGHPUT_BATCH]


def timing_batch(job: Job) -> tuple[Any, int]:
    """``THROUGHPUT_BATCH`` rows of the calibration batches (repeated as needed; a mapping's tensors each
    repeated), and its number of rows."""
    example = job.example
    if torch.is_tensor(example):
        rows = torch.cat([batch for batch in job.batches if torch.is_tensor(batch)] or [example])
        return _rows(rows), THROUGHPUT_BATCH
    if isinstance(example, Mapping) and all(torch.is_tensor(value) and value.dim() for value in example.values()):
        return {name: _rows(value) for name, value in example.items()}, THROUGHPUT_BATCH
    sizes = [len(value) for value in example.values() if torch.is_tensor(value) and value.dim()]
    return example, sizes[0] if sizes else 1


def search_engines(
    job: Job, engines: list[str], float_layers: list[str], evaluation: list, reference: list
) -> tuple[list[Attempt], Attempt | None, str]:
    """Every engine's attempt (in ``engines`` order), the chosen one (``None``: the float model ships), why."""
    config = job.config
    max_metric_drop, min_fidelity = target(config)
    batch, rows = timing_batch(job)
    search_config = SearchConfig(
        candidates=[[{"quantize": {"engine": engine}}] for engine in engines],
        objective="throughput",
        timing={"batch": rows},
        constraint={"max_metric_drop": max_metric_drop, "min_fidelity": min_fidelity},
    )
    specs = [
        CandidateSpec(engine, (Step("quantize", config.model_copy(update={"engine": engine})),)) for engine in engines
    ]
    attempts: dict[str, Attempt] = {}

    def apply_step(model: nn.Module, step: Step, folder: Path, input_key: str) -> StepResult:
        engine = step.config.engine
        try:
            attempts[engine] = attempt_engine(
                dataclasses.replace(job, model=model), engine, float_layers, evaluation, reference
            )
        except OptiforgeError as error:
            attempts[engine] = Attempt(engine, None, [], target_met=False, error=str(error))
            raise
        built = attempts[engine].built
        return StepResult(built.model, info={"engine": engine, "float_layers": attempts[engine].float_layers})

    def measurer(baseline: nn.Module) -> FidelityMeasurer:
        return FidelityMeasurer(baseline, search_config, batch, attempts, float_accuracy(evaluation, reference))

    search = Search(
        search_config,
        None,
        None,
        apply_step,
        job.folder / "auto",
        progress=False,
        measurer=measurer,
        save_artifact=lambda model, path: None,
    )
    result = search.run(job.model, specs)
    tried = []
    for outcome in result.outcomes:
        engine = outcome.spec.name
        found = attempts.get(engine) or Attempt(engine, None, [], target_met=False)
        found.error = found.error or outcome.error or outcome.skipped
        found.throughput_per_s = outcome.figures.get("throughput_per_s")
        found.speedup = outcome.figures.get("speedup")
        tried.append(found)
    shutil.rmtree(job.folder / "auto", ignore_errors=True)  # the figures are in the result's candidates
    chosen = attempts[result.chosen.spec.name] if result.chosen else None
    if chosen is not None:  # only what ships keeps its files (an engine's exported graphs can be large)
        for engine in engines:
            if engine != chosen.engine:
                shutil.rmtree(job.folder / engine, ignore_errors=True)
    return tried, chosen, result.selection.reason
