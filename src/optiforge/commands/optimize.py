"""``optiforge optimize``: search the default space of a trained model's family, ship the best point.

The model comes from a recipe (trained first, as ``run`` does) or from a finished run folder (its last
artefact, a float state dict, loaded by the recipe's checkpoint loader). The run folder written is an
ordinary one: its report has the trained (or loaded) model's row and the search's row, whose
``search/search.json`` and ``search/search.png`` hold every candidate and the front.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from optiforge.cli import command, recipe_arguments
from optiforge.errors import ConfigError


def _arguments(parser: argparse.ArgumentParser) -> None:
    recipe_arguments(parser)
    parser.add_argument("--max-drop", type=float, default=0.01, help="largest task-metric loss allowed (0.01)")
    parser.add_argument("--min-fidelity", type=float, help="least mean output cosine to the baseline (encoders)")
    parser.add_argument("--objective", choices=["latency", "throughput", "size", "memory"], default="latency")
    parser.add_argument("--batch", type=int, help="batch the speed is measured at (default: 1 for latency, 256)")
    parser.add_argument("--budget", type=float, metavar="MIN", help="time budget in minutes")
    parser.add_argument(
        "--space",
        metavar="FILE",
        help="a YAML file of search fields to use instead of the defaults: the space (candidates, stages, options) "
        "and how it is searched (timing: {rounds, measure}, effort: {proxy}, prefer)",
    )
    parser.add_argument("--keep-front", action="store_true", help="measure every front point on the test split")
    parser.add_argument("--out", help="run folder (default: runs/<recipe name>-optimize)")
    parser.add_argument("--resume", action="store_true", help="skip the candidates an earlier search measured")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--dry-run", action="store_true", help="print the space and its cost, run nothing")


def _from_run_folder(run_dir: Path) -> dict:
    """The recipe of a finished run, its model loaded from the run's last artefact and not trained again."""
    report_path = run_dir / "report.json"
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"optimize: '{report_path}' is not a readable report ({error})") from None
    rows, recipe = report.get("stages"), report.get("config")
    if not isinstance(rows, list) or not rows or not isinstance(recipe, dict):
        raise ConfigError(f"optimize: '{report_path}' has no stages or no recipe; is '{run_dir}' a finished run?")
    last = rows[-1]
    artifact = last.get("artifact") if isinstance(last, dict) else None
    if not isinstance(artifact, str) or Path(artifact).name != "model.pt":
        raise ConfigError(
            f"optimize: the last artefact of '{run_dir}' is {artifact!r} (stage {last.get('stage')!r}), not a float "
            "state dict (model.pt); optimize a run whose last stage trains, or give its recipe"
        )
    path = (run_dir / artifact).resolve()
    if not path.is_relative_to(run_dir.resolve()) or not path.is_file():
        raise ConfigError(f"optimize: the artefact '{artifact}' named by '{report_path}' is not a file of the run")
    model = dict(recipe.get("model") or {})
    model["checkpoint"] = str(path)
    return {**recipe, "model": model, "train": {**(recipe.get("train") or {}), "epochs": 0}}


def _space(path: str) -> dict:
    """The search fields in the YAML file ``path`` (read with the recipe loader's limits)."""
    from optiforge.recipe import parse_yaml, read_recipe_text

    if not Path(path).is_file():
        raise ConfigError(f"optimize: --space: no file '{path}'")
    fields = parse_yaml(*read_recipe_text(path))
    allowed = {"candidates", "stages", "options", "timing", "effort", "prefer"}
    if not isinstance(fields, dict) or not fields or set(fields) - allowed:
        raise ConfigError(f"optimize: --space '{path}': a mapping of {', '.join(sorted(allowed))}, got {fields!r:.100}")
    return fields


# built-in data whose targets are a pretrained model's own outputs (see ``stages.search.FAMILY_OF_TASK``)
FAMILY_OF_DATA = {"sentences": "encoder", "photos": "pretrained"}


def _family(recipe: Any) -> str:
    return FAMILY_OF_DATA.get(recipe.data.name, "classifier")


@command("optimize", "search the default space of a model's family; ship the best point meeting --max-drop", _arguments)
def optimize_command(args: argparse.Namespace) -> int:
    from optiforge.recipe import load_recipe, recipe_to_dict
    from optiforge.search.estimate import estimate
    from optiforge.stages.search import candidates_of, default_search, proxy_step

    source = Path(args.recipe)
    from_run = source.is_dir()
    base = _from_run_folder(source) if from_run else recipe_to_dict(load_recipe(args.recipe, args.overrides))
    if from_run and args.overrides:
        base = recipe_to_dict(load_recipe(base, args.overrides))
    recipe = load_recipe(base)
    search = default_search(
        _family(recipe),
        args.objective,
        max_metric_drop=args.max_drop,
        min_fidelity=args.min_fidelity,
        batch=args.batch,
        budget_minutes=args.budget,
        keep="front" if args.keep_front else "chosen",
    )
    if args.space:
        space = _space(args.space)
        fields = search.model_dump(exclude={"candidates", "stages", "options"})
        for section in ("timing", "effort"):  # the file's settings go into the command line's, not over them
            if isinstance(space.get(section), dict):
                space[section] = {**fields[section], **space[section]}
        search = type(search)(**{**fields, "candidates": [], "stages": [], "options": {}, **space})
    specs, _ = candidates_of(search)
    if args.dry_run:
        print(f"optimize {recipe.name}: objective {search.objective} at batch {search.timing_batch}, {_family(recipe)}")
        for spec in specs:
            print(f"  {spec.name}")
        proxy = search.effort.proxy.fraction if search.effort.proxy else None
        print(f"cost: {estimate(specs, proxy, proxy_step).describe()}")
        if recipe.train.epochs:
            print(f"  plus training the model first: {recipe.train.epochs} epochs")
        return 0
    name = f"{recipe.name}-optimize"
    out = Path(args.out) if args.out else Path("runs") / name
    if from_run and out.resolve() == source.resolve():
        raise ConfigError(f"optimize: --out '{out}' is the run being optimized; choose another folder")
    stage = {"search": search.model_dump(mode="json", exclude_defaults=True)}
    optimized = {**base, "name": name, "stages": [stage], "export": []}
    from optiforge.runner import run_recipe

    result = run_recipe(optimized, out=out, resume=args.resume, progress=not args.no_progress)
    row = result.report["stages"][-1]  # the search's own row (its front points' rows come before it)
    print(f"shipped: {row.get('chosen')} — {row.get('reason')}")
    for note in row.get("notes") or []:
        print(f"note: {note}")
    return 0
