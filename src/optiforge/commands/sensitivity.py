"""``optiforge sensitivity RECIPE``: per-layer pruning curves and per-layer ratios for a target."""

from __future__ import annotations

import argparse
from pathlib import Path

from optiforge.cli import command, recipe_arguments


def _arguments(parser: argparse.ArgumentParser) -> None:
    recipe_arguments(parser, default="compress")
    parser.add_argument("--ratios", default=None, help="comma-separated ratios to try, e.g. 0.25,0.5,0.75,0.9")
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="share of weights to remove (default: the recipe's first prune stage's sparsity)",
    )
    parser.add_argument(
        "--out", default=None, help="folder for sensitivity.json and .png (default: runs/<recipe>-sensitivity)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress output")


@command("sensitivity", "prune each layer alone at several ratios; plot it and derive per-layer ratios", _arguments)
def sensitivity_command(args: argparse.Namespace) -> int:
    from optiforge.compress.config import PruneConfig
    from optiforge.compress.sensitivity import DEFAULT_RATIOS, allocate, analyze, plot
    from optiforge.data import build_data
    from optiforge.errors import ConfigError
    from optiforge.models.builtin import build_model
    from optiforge.recipe import load_recipe
    from optiforge.training.loop import train

    recipe = load_recipe(args.recipe, args.overrides)
    stages = [(index, spec.config) for index, spec in enumerate(recipe.stages) if spec.kind == "prune"]
    index, config = stages[0] if stages else (None, PruneConfig())
    try:
        ratios = [float(text) for text in args.ratios.split(",")] if args.ratios else list(DEFAULT_RATIOS)
    except ValueError:
        raise ConfigError(f"--ratios: expected numbers separated by commas, got '{args.ratios}'") from None
    data = build_data(recipe.data)
    model = build_model(recipe.model, data)
    if recipe.train.epochs > 0:
        model = train(model, data, recipe.train, hardware=recipe.hardware, progress=not args.no_progress).model
    say = None if args.no_progress else (lambda text: print(f"  pruning {text}", flush=True))
    result = analyze(model, data, config, ratios, progress=say)
    target = args.target if args.target is not None else config.sparsity
    allocate(result, target)
    out = Path(args.out) if args.out else Path("runs") / f"{recipe.name}-sensitivity"
    json_path = result.save(out / "sensitivity.json")
    plot_path = plot(result, out / "sensitivity.png")
    print(f"baseline validation {result.metric}: {result.baseline:.4f}; per-layer ratios for target {target}:")
    width = max(len(name) for name in result.layer_sparsity)
    for name, ratio in result.layer_sparsity.items():
        at = result.ratios.index(ratio) if ratio in result.ratios else None
        value = f"{result.curves[name][at]:.4f}" if at is not None else f"{result.baseline:.4f}"
        print(f"  {name:<{width}}  {ratio:.2f}  ({result.metric} alone: {value})")
    print(f"wrote {json_path} and {plot_path}")
    if index is not None:
        print(f"use it: optiforge run {args.recipe} --set stages.{index}.prune.layer_sparsity={json_path}")
    return 0
