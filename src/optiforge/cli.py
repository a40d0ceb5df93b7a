"""The ``optiforge`` command. User mistakes print one line and exit with status 2."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from optiforge.errors import OptiforgeError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None]) -> Callable:
    """Register a sub-command: ``arguments(parser)`` adds its options, the function runs it."""

    def add(function: Callable[[argparse.Namespace], int]) -> Callable:
        COMMANDS[name] = (help_text, arguments, function)
        return function

    return add


def recipe_arguments(parser: argparse.ArgumentParser, default: str = "quickstart") -> None:
    """The RECIPE argument and ``--set`` overrides, shared by every command that reads a recipe."""
    parser.add_argument(
        "recipe", nargs="?", default=default, help=f"a recipe file or a built-in recipe name (default: {default})"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a recipe field, e.g. --set train.optimizer.lr=0.05 (repeatable)",
    )


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    recipe_arguments(parser)
    parser.add_argument("--out", help="run folder (default: runs/<recipe name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--nproc", type=int, default=1, help="worker processes (started with torch.distributed.run)")


@command("run", "run a recipe: train, apply its stages, measure and report", _run_arguments)
def run_command(args: argparse.Namespace) -> int:
    if args.nproc > 1:
        from optiforge.launch import launch
        from optiforge.preflight import check_recipe
        from optiforge.recipe import load_recipe
        from optiforge.run_folder import check_run_folder

        recipe = load_recipe(args.recipe, args.overrides)
        check_recipe(recipe)
        check_run_folder(Path(args.out) if args.out else Path("runs") / recipe.name)
        return launch(args, recipe)
    from optiforge.runner import run_recipe

    with _terminate_as_exit():
        result = run_recipe(
            args.recipe, args.overrides, out=args.out, resume=args.resume, progress=not args.no_progress
        )
    if result.report:
        print(f"report: {result.run_dir / 'report.md'}")
    return 0


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (a scheduler, or the launcher stopping its workers) ends the run as Ctrl-C does:
    the lock is released and ``run.json`` says the run stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@command("recipes", "list the built-in recipes", lambda parser: None)
def recipes_command(args: argparse.Namespace) -> int:
    import yaml

    from optiforge.recipe import builtin_recipes

    for name, path in sorted(builtin_recipes().items()):
        description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        print(f"{name:<14} {description}")
    return 0


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    recipe_arguments(parser)
    parser.add_argument("--show", action="store_true", help="print the full recipe with defaults filled in")


@command("validate", "check a recipe without running it", _validate_arguments)
def validate_command(args: argparse.Namespace) -> int:
    import yaml

    from optiforge.preflight import check_recipe
    from optiforge.recipe import load_recipe, recipe_to_dict

    recipe = load_recipe(args.recipe, args.overrides)
    check_recipe(recipe)
    if args.show:
        print(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    print(f"recipe '{recipe.name}' is valid ({len(recipe.stages)} stages)")
    return 0


def _copy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="built-in recipe name")
    parser.add_argument("destination", help="file to write")


@command("copy", "copy a built-in recipe to a file to edit", _copy_arguments)
def copy_command(args: argparse.Namespace) -> int:
    from optiforge.files import atomic_write_text
    from optiforge.recipe import read_recipe_text

    text, _ = read_recipe_text(args.name)
    destination = Path(args.destination)
    if destination.exists():
        raise OptiforgeError(f"copy: '{destination}' exists; choose another file")
    atomic_write_text(destination, text)
    print(f"wrote {destination}")
    return 0


def _lr_find_arguments(parser: argparse.ArgumentParser) -> None:
    recipe_arguments(parser)
    parser.add_argument("--steps", type=int, default=100, help="mini-batches to try (default 100)")
    parser.add_argument("--start-lr", type=float, default=1e-5)
    parser.add_argument("--end-lr", type=float, default=10.0)
    parser.add_argument("--plot", default="lr_find.png", help="where to write the plot (default lr_find.png)")


@command("lr-find", "learning-rate range test: plot the loss against the rate and suggest one", _lr_find_arguments)
def lr_find_command(args: argparse.Namespace) -> int:
    from optiforge.data import build_data
    from optiforge.models.builtin import build_model
    from optiforge.recipe import load_recipe
    from optiforge.training.lr_find import lr_find

    recipe = load_recipe(args.recipe, args.overrides)
    data = build_data(recipe.data)
    model = build_model(recipe.model, data)
    found = lr_find(
        model,
        data,
        recipe.train,
        hardware=recipe.hardware,
        start_lr=args.start_lr,
        end_lr=args.end_lr,
        steps=args.steps,
        plot=args.plot,
    )
    print(f"suggested learning rate: {found.suggested_lr:.3g} (plot: {found.plot})")
    print(f"use it with: --set train.optimizer.lr={found.suggested_lr:.3g}")
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run folder")


@command("report", "print the table of a finished run", _report_arguments)
def report_command(args: argparse.Namespace) -> int:
    from optiforge.bench.report import print_table

    path = Path(args.run_dir) / "report.json"
    if not path.is_file():
        raise OptiforgeError(f"report: no report.json in '{args.run_dir}'")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OptiforgeError(f"report: '{path}' cannot be read as JSON ({error})") from None
    problem = _report_problem(report)
    if problem:
        raise OptiforgeError(f"report: '{path}' is not an optiforge report: {problem}")
    print_table(report)
    return 0


def _report_problem(report: object) -> str | None:
    """What makes ``report`` unprintable as a run table, or None."""
    number, maybe_number = (int, float), (int, float, type(None))
    if not isinstance(report, dict) or not isinstance(report.get("recipe"), str):
        return "expected a mapping with 'recipe', 'environment' and 'stages'"
    if not isinstance(report.get("environment"), dict) or "device" not in report["environment"]:
        return "'environment' must be a mapping with 'device'"
    if not isinstance(report.get("stages"), list):
        return "'stages' must be a list of rows"
    types = {"stage": str, "metric": str, "value": maybe_number, "params": int, "nonzero_params": int}
    types |= {"size_bytes": maybe_number, "throughput_per_s": number, "peak_memory_bytes": maybe_number}
    for index, row in enumerate(report["stages"]):
        if not isinstance(row, dict):
            return f"stages[{index}] must be a mapping"
        for key, allowed in (*types.items(), ("seconds", number)):
            if not isinstance(row.get(key), allowed) or isinstance(row.get(key), bool):
                return f"stages[{index}].{key} is {row.get(key)!r:.40}"
        if not isinstance(row.get("latency_ms"), dict) or not isinstance(row["latency_ms"].get("p50"), number):
            return f"stages[{index}].latency_ms must be a mapping with a number 'p50'"
    return None


def _load_plugins() -> None:
    """Import ``optiforge.commands.*``: each module adds commands with ``@command``."""
    import importlib
    import pkgutil

    import optiforge.commands

    for module in pkgutil.iter_modules(optiforge.commands.__path__):
        importlib.import_module(f"optiforge.commands.{module.name}")


def parser() -> argparse.ArgumentParser:
    _load_plugins()
    root = argparse.ArgumentParser(prog="optiforge", description="Train models faster and ship them smaller.")
    root.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = root.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments, _function) in COMMANDS.items():
        arguments(sub.add_parser(name, help=help_text, description=help_text))
    return root


def main(argv: list[str] | None = None) -> int:
    if "TORCHELASTIC_RESTART_COUNT" in os.environ:  # a worker of torch's elastic launcher
        from optiforge.launch import die_with_launcher

        die_with_launcher()  # first: a worker whose launcher is killed from now on stops too
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if args.command is None:
        args = parser().parse_args(["run", *(argv or [])])
    try:
        return COMMANDS[args.command][2](args)
    except OptiforgeError as error:
        message = " ".join(str(error).split())  # one line even when a message quotes multi-line text
        print(f"optiforge: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optiforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # run as `python -m optiforge.cli` (as the --nproc workers are), this file is `__main__`, while the
    # commands/ plugins register into the module `optiforge.cli`: dispatch through that one
    from optiforge.cli import main as package_main

    sys.exit(package_main())
