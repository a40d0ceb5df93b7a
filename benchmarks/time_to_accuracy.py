"""Time to accuracy: optiforge's fast-* recipes against a plain PyTorch tutorial loop.

The time is wall-clock until the model first reaches the target validation
accuracy; the model at that point is then confirmed on the test split.

- optiforge's side: a recipe run through the runner; its time is the train
  row's ``seconds`` in the report, everything included (range test, batch
  measurement, evaluation, checkpoints, the measurements after training).
- the baseline: what a PyTorch tutorial does by hand (Adam at lr 1e-3, batch
  64, fp32, no schedule, a DataLoader over the dataset, evaluation after every
  epoch), on the same splits, model and initial weights (same seed). Only the
  shuffling differs (a DataLoader's generator against optiforge's per-epoch
  seeds); given the same order the two train bit for bit alike. The first
  epoch at 96% on 400 validation signals is a noisy first passage (the plain
  settings hover at 94-95%), so single seeds of the two differ widely.
- each lever alone: optiforge with the baseline's settings plus that one
  lever, so its share of the gain shows; the fast-* recipe is all of them.

The sides take turns seed by seed in one process; the table gives medians over
the seeds, as Markdown. A seed that never reached the target counts as slower
than every seed that did (its time is the whole run, shown as "> X s"), on
both sides, so a median is never taken over the reaching seeds alone. Timings need an idle machine: another job taking a
core stalls PyTorch's thread pool and the figures with it.

    python benchmarks/time_to_accuracy.py [--seeds 3] [--quick] [--tasks mnist1d,mnist1d-wide] [--levers ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import optiforge
from optiforge.hardware.capabilities import cpu_has_bf16


@dataclass
class Task:
    recipe: str
    model: dict
    target: float
    max_epochs: int


TASKS = {
    "mnist1d": Task("fast-mnist1d", {"name": "cnn1d", "channels": [64, 128, 128], "kernel_size": 5}, 0.96, 60),
    "mnist1d-wide": Task(
        "fast-mnist1d-wide", {"name": "cnn1d", "channels": [128, 256, 256, 256], "kernel_size": 5}, 0.96, 60
    ),
}

# Each lever as recipe overrides on top of the baseline's settings; None when it does not apply here.
LEVERS: dict[str, list[str]] = {
    "lr: auto": ["train.lr=auto"],
    "one-cycle": ["train.schedule.name=onecycle", "train.lr=0.005"],
    "plateau schedule": ["train.schedule={name: plateau, warmup_epochs: 1, patience: 2, gamma: 0.3}"],
    "muon": ["train.optimizer.name=muon", "train.lr=0.02"],
    "batch_size: auto (lr scaled)": ["train.batch_size=auto"],
    "bf16": ["hardware.precision=bf16"],
    "torch.compile": ["hardware.compile=true"],
    "channels-last": ["hardware.channels_last=true"],
    "data on device": ["hardware.data_on_device=true"],
    "eval every 2 epochs": ["train.validation.every_epochs=2"],
    "stop_at checked every half epoch": ["train.validation.every_epochs=0.5"],
    "weight average": ["train.optimizer.weight_average={decay: 0.99}"],
    "label smoothing": ["data.label_smoothing=0.1"],
    "weight decay 0.1 (adamw)": ["train.optimizer.name=adamw", "train.optimizer.weight_decay=0.1"],
}


def not_applicable(lever: str, task: Task) -> str | None:
    if lever == "bf16" and not torch.cuda.is_available() and not cpu_has_bf16():
        return "no bf16 units on this CPU (emulated bf16 is slower)"
    if lever == "channels-last" and task.model["name"] == "cnn1d":
        return "channels-last is a layout of 2-D convolutions; cnn1d's are 1-D"
    return None


@dataclass
class Outcome:
    seconds: float | None  # None: the target was not reached
    epochs: int
    test_accuracy: float
    run_seconds: float  # the whole run, reached or not


@dataclass
class Median:
    seconds: float
    reached: bool  # False: a lower bound, the median seed never reached the target

    def __str__(self) -> str:
        return f"{self.seconds:.1f}" if self.reached else f"> {self.seconds:.1f}"


def median_time(outcomes: list[Outcome]) -> Median:
    """The median with every unreached seed ranked after every reaching one (ties among them by run time)."""
    ranked = sorted(outcomes, key=lambda o: (o.seconds is None, o.run_seconds))
    middle = ranked[(len(ranked) - 1) // 2 : len(ranked) // 2 + 1]  # one seed, or two to average
    # an unreached seed's whole run is a lower bound of its time to the target
    return Median(statistics.mean(o.run_seconds for o in middle), all(o.seconds is not None for o in middle))


def speedup(base: Median, other: Median) -> str:
    if base.reached and other.reached:
        return f"{base.seconds / other.seconds:.2f}×"
    if other.reached:
        return f"> {base.seconds / other.seconds:.2f}×"
    if base.reached:
        return f"< {base.seconds / other.seconds:.2f}×"
    return "-"


@dataclass
class Row:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    note: str = ""


def baseline(task: Task, data: optiforge.TaskData, seed: int) -> Outcome:
    """The tutorial loop, written out by hand."""
    torch.manual_seed(seed)
    model = optiforge.build_model(optiforge.ModelConfig(**task.model), data)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True, generator=generator)
    val_loader = torch.utils.data.DataLoader(data.val, batch_size=512)
    test_loader = torch.utils.data.DataLoader(data.test, batch_size=512)

    def accuracy(loader) -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for inputs, targets in loader:
                correct += (model(inputs).argmax(dim=1) == targets).sum().item()
                total += len(targets)
        return correct / total

    started = time.perf_counter()
    for epoch in range(1, task.max_epochs + 1):
        model.train()
        for inputs, targets in train_loader:
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if accuracy(val_loader) >= task.target:
            elapsed = time.perf_counter() - started
            return Outcome(elapsed, epoch, accuracy(test_loader), elapsed)
    return Outcome(None, task.max_epochs, accuracy(test_loader), time.perf_counter() - started)


def plain_recipe(task: Task) -> dict:
    """optiforge with the baseline's settings: the starting point each lever is added to."""
    return {
        "name": "plain",
        "data": {"name": "mnist1d"},
        "model": task.model,
        "hardware": {"device": "auto", "precision": "fp32", "data_on_device": False},
        "train": {
            "optimizer": {"name": "adam", "lr": 0.001},
            "epochs": task.max_epochs,
            "batch_size": 64,
            "stop_at": {"accuracy": task.target},
        },
        "measure": {"latency_repeats": 20, "warmup": 2, "throughput_repeats": 2},
    }


def with_optiforge(source: str | dict, overrides: list[str], seed: int) -> Outcome:
    with tempfile.TemporaryDirectory() as out:
        report = optiforge.run_recipe(
            source, [*overrides, f"train.seed={seed}"], out=out, progress=False, show_table=False
        ).report
    row = report["stages"][0]
    reached = row.get("stop_at_epoch")
    return Outcome(row["seconds"] if reached is not None else None, row["epochs"], row["value"], row["seconds"])


def table(task_name: str, task: Task, rows: list[Row], seeds: int) -> str:
    base_median = median_time(rows[0].outcomes)
    lines = [
        f"### {task_name}: {task.target:.0%} validation accuracy (median of {seeds} seeds)",
        "",
        "| setting | seconds to target | speed-up | epochs | test accuracy | reached | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        if not row.outcomes:
            lines.append(f"| {row.name} | - | - | - | - | - | {row.note} |")
            continue
        reached = [o.seconds for o in row.outcomes if o.seconds is not None]
        median = median_time(row.outcomes)
        epochs = statistics.median(o.epochs for o in row.outcomes)
        test = statistics.median(o.test_accuracy for o in row.outcomes)
        lines.append(
            f"| {row.name} | {median} | {speedup(base_median, median)} | {epochs:g} | {test:.4f} "
            f"| {len(reached)}/{len(row.outcomes)} | {row.note} |"
        )
    lines += [
        "",
        "Medians rank a seed that never reached the target after every seed that did, on both sides; its time is the "
        'whole run, and a median that falls on such a seed shows as "> X" (a lower bound).',
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 60%% target, at most 3 epochs")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from: {', '.join(TASKS)}")
    parser.add_argument("--levers", default=",".join(LEVERS), help="comma-separated lever names, or 'none'")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    levers = [] if args.levers == "none" else [name.strip() for name in args.levers.split(",")]
    unknown = [name for name in levers if name not in LEVERS]
    if unknown:
        parser.error(f"unknown lever(s) {unknown}; choose from: {', '.join(LEVERS)}")
    data = optiforge.build_data(optiforge.DataConfig(name="mnist1d"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 units: {cpu_has_bf16()}")
    for task_name in args.tasks.split(","):
        task = TASKS[task_name]
        if args.quick:
            task = Task(task.recipe, task.model, 0.60, 3)
        quick = [f"train.stop_at={{accuracy: {task.target}}}", f"train.epochs={task.max_epochs}"] if args.quick else []
        rows = [Row("hand-written PyTorch loop (baseline)"), Row("optiforge, the baseline's settings")]
        rows += [Row(f"+ {name}", note=not_applicable(name, task) or "") for name in levers]
        rows.append(Row(f"all levers: recipe {task.recipe}"))
        for seed in range(args.seeds):
            rows[0].outcomes.append(baseline(task, data, seed))
            rows[1].outcomes.append(with_optiforge(plain_recipe(task), [], seed))
            for row, name in zip(rows[2:-1], levers, strict=True):
                if not row.note:
                    row.outcomes.append(with_optiforge(plain_recipe(task), LEVERS[name], seed))
            rows[-1].outcomes.append(with_optiforge(task.recipe, quick, seed))
            for row in rows:
                if row.outcomes:
                    print(f"{task_name} seed {seed}: {row.name}: {row.outcomes[-1]}", flush=True)
        print(table(task_name, task, rows, args.seeds), flush=True)


if __name__ == "__main__":
    main()
