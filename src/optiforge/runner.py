"""The recipe runner: train, apply each stage, measure after each, report.

The runner only sequences. Everything a run needs is checked before the run
folder is touched (:func:`optiforge.preflight.check_recipe`: recipe, data,
model, shapes, stage layer names), so a user mistake leaves nothing behind.
Resuming re-enters each stage; training inside a stage finds its checkpoint
and continues (or returns at once when it had finished).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from optiforge.bench.measure import measure
from optiforge.bench.plots import plot_tradeoff, plot_training_curves
from optiforge.bench.report import environment, print_table, write_report
from optiforge.errors import OptiforgeError
from optiforge.exporters.base import EXPORTERS
from optiforge.files import artifact_size_bytes, atomic_save
from optiforge.hardware import resolve_device, set_threads
from optiforge.parallel import Strategy
from optiforge.parallel.strategies import strategy_for
from optiforge.preflight import Prepared, check_recipe
from optiforge.recipe import Recipe, load_recipe, recipe_to_dict
from optiforge.run_folder import RunFolder, disk_error
from optiforge.stages import STAGES, StageContext, StageOutput
from optiforge.training.loop import train

log = logging.getLogger("optiforge")


@dataclass
class RunResult:
    report: dict
    run_dir: Path
    model: nn.Module | object


def _stage_names(recipe: Recipe) -> list[str]:
    names, seen = [], {"train": 1}  # the first row (and folder) is the recipe's own training
    for spec in recipe.stages:
        seen[spec.kind] = seen.get(spec.kind, 0) + 1
        names.append(spec.kind if seen[spec.kind] == 1 else f"{spec.kind}-{seen[spec.kind]}")
    return names


def run_recipe(
    source: str | Path | dict | Recipe = "quickstart",
    overrides: list[str] | tuple = (),
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    show_table: bool = True,
) -> RunResult:
    """Run a recipe (path, built-in name, mapping or Recipe) and return its report.

    Everything checkable is checked before ``out`` (default ``runs/<name>``) is created. An earlier run's
    own files there are replaced, other files are left alone (see :mod:`optiforge.run_folder`); the
    folder is locked while the run lasts, and ``run.json`` says how the run ended.

    >>> import optiforge
    >>> result = optiforge.run_recipe("quickstart", ["train.epochs=1"], out="/tmp/of-doc", show_table=False,
    ...                               progress=False)
    >>> [row["stage"] for row in result.report["stages"]]
    ['train']
    """
    recipe = load_recipe(source, overrides)
    set_threads(recipe.hardware.threads)
    prepared = check_recipe(recipe)  # every mistake found here leaves nothing written
    run_dir = Path(out) if out else Path("runs") / recipe.name
    strategy = strategy_for(recipe.parallel)
    resume = resume or strategy.restarted  # a worker restarted by the elastic launcher continues the run
    # only the main process locks and prepares the folder; the other workers must not refuse it as busy
    folder = RunFolder(run_dir, ["train", *_stage_names(recipe), "export"]) if strategy.is_main else None
    try:
        if folder is not None:
            folder.open(resume)
        strategy.barrier()
        result = _run(prepared, run_dir, strategy, resume=resume, progress=progress, show_table=show_table)
        if folder is not None:
            folder.finish()
    except BaseException as error:
        readable = disk_error(error, run_dir)
        if folder is not None and folder.locked:
            folder.fail(_reason(readable or error))
        if readable is not None:
            raise readable from None
        raise
    finally:
        if folder is not None:
            folder.close()
    return result


def _reason(error: BaseException) -> str:
    """What ``run.json`` says about a run that stopped."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, SystemExit):
        return f"terminated (exit status {error.code})"
    if isinstance(error, OptiforgeError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _run(
    prepared: Prepared, run_dir: Path, strategy: Strategy, *, resume: bool, progress: bool, show_table: bool
) -> RunResult:
    """Train, apply the stages, measure, export and report into ``run_dir`` (opened and locked)."""
    recipe, data, model, task = prepared.recipe, prepared.data, prepared.model, prepared.task
    device = resolve_device(recipe.hardware.device)
    stage_names = _stage_names(recipe)

    rows: list[dict] = []
    histories: dict[str, list[dict]] = {}

    def record(name: str, output: StageOutput, started: float, stage_dir: Path) -> None:
        artifact = output.artifact
        if artifact is None and isinstance(output.model, nn.Module) and strategy.is_main:
            artifact = atomic_save(output.model.state_dict(), stage_dir / "model.pt")
        figures = measure(
            output.model, data, artifact=artifact, config=recipe.measure, task=task, hardware=recipe.hardware
        )
        row = {"stage": name, **figures.as_dict(), "seconds": time.perf_counter() - started}
        row["artifact"] = str(Path(artifact).relative_to(run_dir)) if artifact else None
        row.update(output.info)
        rows.append(row)
        histories[name] = output.history

    started = time.perf_counter()
    if recipe.train.epochs > 0:
        result = train(
            model,
            data,
            recipe.train,
            hardware=recipe.hardware,
            checkpoint_dir=run_dir / "train",
            resume=resume,
            progress=progress,
            strategy=strategy,
            task=task,
        )
        model, train_config = result.model, result.config  # with numbers in place of 'auto'
        output = StageOutput(model, history=result.history, info={"epochs": result.epochs_run, **result.choices})
    else:
        model, train_config = model.to(device), recipe.train
        output = StageOutput(model)
    record("train" if recipe.train.epochs > 0 else "baseline", output, started, run_dir / "train")

    for name, spec in zip(stage_names, recipe.stages, strict=True):
        stage_dir = run_dir / name
        ctx = StageContext(
            data=data,
            task=task,
            hardware=recipe.hardware,
            train_config=train_config,
            stage_dir=stage_dir,
            run_dir=run_dir,
            resume=resume,
            progress=progress,
            strategy=strategy,
            previous=list(rows),
        )
        started = time.perf_counter()
        log.info("stage %s", name)
        result = STAGES.get(spec.kind).apply(model, spec.config, ctx)
        output = result if isinstance(result, StageOutput) else StageOutput(result)
        record(name, output, started, stage_dir)
        model = output.model

    exports = []
    if strategy.is_main:
        example = data.example_input(1).to(device)
        for format_name in recipe.export:
            exporter, suffix = EXPORTERS.get(format_name, field="export")
            writer = output.exports.get(format_name)
            destination = run_dir / "export" / f"model{suffix}"
            path = writer(destination, example) if writer else exporter(model, destination, example)
            exports.append(
                {
                    "format": format_name,
                    "artifact": str(path.relative_to(run_dir)),
                    "size_bytes": artifact_size_bytes(path),
                }
            )

    report = {
        "recipe": recipe.name,
        "environment": environment(device) | {"world_size": strategy.world_size},
        "stages": rows,
        "exports": exports,
        "plots": [],
        "config": recipe_to_dict(recipe),
    }
    if strategy.is_main:
        for plot in (
            plot_training_curves(histories, run_dir / "training_curves.png", task.primary_metric),
            plot_tradeoff(rows, run_dir / "tradeoff.png"),
        ):
            if plot is not None:
                report["plots"].append(plot.name)
        report["histories"] = histories
        write_report(report, run_dir)
        if show_table:
            print_table(report)
    strategy.barrier()
    torch.set_grad_enabled(True)
    return RunResult(report if strategy.is_main else {}, run_dir, model)  # other processes report nothing
