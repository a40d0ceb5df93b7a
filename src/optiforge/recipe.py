"""The recipe: YAML → typed configs, ``--set`` overrides and readable errors."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from optiforge.config import (
    Config,
    DataConfig,
    HardwareConfig,
    MeasureConfig,
    ModelConfig,
    ParallelConfig,
    TrainConfig,
    describe_validation_error,
)
from optiforge.errors import RecipeError
from optiforge.registry import closest


@dataclass(frozen=True)
class StageSpec:
    """One parsed entry of ``stages:``: the kind's name and its typed config."""

    kind: str
    config: BaseModel


class Recipe(Config):
    """A whole run: data, model, hardware, training, then a list of stages."""

    name: str = "recipe"
    description: str = ""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    hardware: HardwareConfig = HardwareConfig()
    train: TrainConfig = TrainConfig()
    parallel: ParallelConfig = ParallelConfig()
    measure: MeasureConfig = MeasureConfig()
    stages: list[StageSpec] = Field(default_factory=list)
    export: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _parse_stages(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("stages"):
            return data
        data = dict(data)
        data["stages"] = [parse_stage(entry, index) for index, entry in enumerate(data["stages"])]
        return data


def parse_stage(entry: Any, index: int) -> StageSpec:
    """Parse ``{kind: {field: value}}`` into a :class:`StageSpec`."""
    from optiforge.stages import STAGES

    where = f"stages[{index}]"
    if isinstance(entry, StageSpec):
        return entry
    if isinstance(entry, str):
        entry = {entry: {}}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise RecipeError(f"{where}: each stage is one mapping '{{kind: {{...}}}}', got {entry!r}")
    ((kind, fields),) = entry.items()
    stage = STAGES.get(str(kind), field=where)
    if isinstance(fields, BaseModel):
        return StageSpec(kind, fields)
    try:
        config = stage.config.model_validate(fields or {})
    except ValidationError as error:
        raise RecipeError(describe_validation_error(error, stage.config, f"{where}.{kind}")) from None
    return StageSpec(kind, config)


def builtin_recipes() -> dict[str, Path]:
    """Built-in recipe names → their YAML files (package data)."""
    folder = importlib.resources.files("optiforge") / "recipes"
    return {Path(str(item)).stem: Path(str(item)) for item in folder.iterdir() if str(item).endswith(".yaml")}


def read_recipe_text(source: str | Path) -> tuple[str, str]:
    """Return (text, where) for a recipe path or a built-in recipe name."""
    path = Path(source)
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    builtins = builtin_recipes()
    if str(source) in builtins:
        return builtins[str(source)].read_text(encoding="utf-8"), f"built-in recipe '{source}'"
    raise RecipeError(
        f"no recipe file '{source}' and no built-in recipe of that name"
        f"{closest(str(source), list(builtins))}; built-in: {', '.join(sorted(builtins))}"
    )


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a raw recipe mapping."""
    key, sep, raw_value = assignment.partition("=")
    if not sep or not key:
        raise RecipeError(f"--set '{assignment}': expected FIELD=VALUE, e.g. train.epochs=5")
    try:
        value = yaml.safe_load(raw_value) if raw_value else ""
    except yaml.YAMLError:
        value = raw_value
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"--set '{key}': '{part}' is not an index of a {len(node)}-item list")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if last:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, (dict, list)):
                child = {}
                node[part] = child
            node = child


def load_recipe(source: str | Path | dict | Recipe = "quickstart", overrides: list[str] | tuple = ()) -> Recipe:
    """Read a recipe (path, built-in name, mapping or Recipe) and validate it."""
    if isinstance(source, Recipe):
        if not overrides:
            return source
        source = recipe_to_dict(source)
    if isinstance(source, dict):
        data, where = source, "recipe"
    else:
        text, where = read_recipe_text(source)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark else ""
            raise RecipeError(f"{where}{line}: not valid YAML ({getattr(error, 'problem', error)})") from None
        if not isinstance(data, dict):
            raise RecipeError(f"{where}: a recipe is a mapping of fields, got {type(data).__name__}")
    data = _plain(data)
    for assignment in overrides:
        apply_override(data, assignment)
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(describe_validation_error(error, Recipe)) from None


def _plain(value: Any) -> Any:
    """Deep-copy a mapping into plain dicts and lists, dumping configs."""
    if isinstance(value, StageSpec):
        return {value.kind: value.config.model_dump(mode="python")}
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="python"))
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def recipe_to_dict(recipe: Recipe) -> dict:
    """A recipe as plain data (for the report and ``optiforge validate``)."""
    data = _plain(recipe.model_dump(mode="python", exclude={"stages"}))
    data["stages"] = [_plain(spec) for spec in recipe.stages]
    return data
