"""The recipe runner: train, apply each stage, measure after each, report.

The runner only sequences. Everything a run needs is validated before the run
folder is touched (recipe, data, model, shapes), so a user mistake leaves
nothing behind. Resuming re-enters each stage; training inside a stage finds
its checkpoint and continues (or returns at once when it had finished).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from optiforge.bench.measure import measure
from optiforge.bench.plots import plot_tradeoff, plot_training_curves
from optiforge.bench.report import environment, print_table, write_report
from optiforge.data.builtin import build_data
from optiforge.exporters.base import EXPORTERS
from optiforge.files import atomic_save, atomic_write_text
from optiforge.hardware import resolve_device, set_threads
from optiforge.models.builtin import build_model
from optiforge.parallel.strategies import strategy_for
from optiforge.recipe import Recipe, load_recipe, recipe_to_dict
from optiforge.stages import STAGES, StageContext, StageOutput
from optiforge.tasks import task_for
from optiforge.training.checkpoint import seed_everything
from optiforge.training.loop import train

log = logging.getLogger("optiforge")


@dataclass
class RunResult:
    report: dict
    run_dir: Path
    model: nn.Module | object


def _prepare_run_dir(run_dir: Path, resume: bool) -> None:
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        if not (run_dir / "run.json").is_file():
            from optiforge.errors import ConfigError

            raise ConfigError(f"--out: '{run_dir}' exists and is not an optiforge run folder; choose another")
        log.info("replacing the previous run in %s", run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


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

    >>> import optiforge
    >>> result = optiforge.run_recipe("quickstart", ["train.epochs=1"], out="/tmp/of-doc", show_table=False,
    ...                               progress=False)
    >>> [row["stage"] for row in result.report["stages"]]
    ['train']
    """
    recipe = load_recipe(source, overrides)
    strategy = strategy_for(recipe.parallel)
    resume = resume or strategy.restarted  # a worker restarted by the elastic launcher continues the run
    set_threads(recipe.hardware.threads)
    device = resolve_device(recipe.hardware.device)
    data = build_data(recipe.data)
    seed_everything(recipe.train.seed)  # the model's initial weights are part of a reproducible run
    model = build_model(recipe.model, data)
    task = task_for(data.task)
    run_dir = Path(out) if out else Path("runs") / recipe.name
    stage_names = _stage_names(recipe)

    if strategy.is_main:
        _prepare_run_dir(run_dir, resume)
        atomic_write_text(run_dir / "run.json", '{"status": "running"}\n')
    strategy.barrier()

    rows: list[dict] = []
    histories: dict[str, list[dict]] = {}

    def record(name: str, output: StageOutput, started: float, stage_dir: Path) -> None:
        artifact = output.artifact
        if artifact is None and isinstance(output.model, nn.Module) and strategy.is_main:
            artifact = atomic_save(output.model.state_dict(), stage_dir / "model.pt")
        figures = measure(output.model, data, artifact=artifact, config=recipe.measure, task=task)
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
                {"format": format_name, "artifact": str(path.relative_to(run_dir)), "size_bytes": path.stat().st_size}
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
        atomic_write_text(run_dir / "run.json", '{"status": "complete"}\n')
        if show_table:
            print_table(report)
    strategy.barrier()
    torch.set_grad_enabled(True)
    return RunResult(report if strategy.is_main else {}, run_dir, model)  # other processes report nothing
