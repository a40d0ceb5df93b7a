"""The recipe: YAML → typed configs, ``--set`` overrides and readable errors."""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

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
from optiforge.errors import ConfigError, RecipeError
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

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        # the name is the default run folder, runs/<name>: it must stay one folder inside runs/
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", value) or value in (".", ".."):
            raise ValueError(
                "a recipe name names its run folder (runs/<name>): use letters, digits, '.', '_' and '-', "
                "at most 100 characters, not '.' or '..'"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _parse_stages(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("stages") in (None, [], ()):
            return data
        if not isinstance(data["stages"], (list, tuple)):
            raise RecipeError(f"stages: a list of stages, e.g. [prune: {{sparsity: 0.5}}], got {data['stages']!r:.100}")
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
        raise RecipeError(f"{where}: each stage is one mapping '{{kind: {{...}}}}', got {entry!r:.100}")
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


MAX_RECIPE_BYTES = 1_000_000
MAX_RECIPE_DEPTH = 50
MAX_RECIPE_VALUES = 10_000  # aliases expanded; real recipes hold a few hundred, and parsing 10,000 takes ~0.5 s


class RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader with the limits a recipe needs.

    It refuses duplicate keys (YAML would keep the last silently), nesting deeper
    than ``MAX_RECIPE_DEPTH``, more than ``MAX_RECIPE_VALUES`` values counting
    each use of an alias in full (a kilobyte of nested aliases can stand for
    billions of values), and aliases that refer to themselves.
    """

    def __init__(self, stream: str, where: str) -> None:
        super().__init__(stream)
        self.where = where
        self.depth = 0
        self.nodes = 0

    def refuse(self, mark: Any, problem: str) -> NoReturn:
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{self.where}{line}: {problem}")

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        self.nodes += 1
        try:
            if self.depth > MAX_RECIPE_DEPTH:
                self.refuse(self.peek_event().start_mark, f"nested deeper than {MAX_RECIPE_DEPTH} levels (the limit)")
            if self.nodes > MAX_RECIPE_VALUES:
                self.refuse(self.peek_event().start_mark, f"more than {MAX_RECIPE_VALUES:,} values (the limit)")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, OverflowError) as error:  # PyYAML's own parsers of tagged scalars
            shown = node.value if isinstance(node, yaml.ScalarNode) else node.id
            tag = node.tag.rpartition(":")[2]
            self.refuse(node.start_mark, f"{shown!r:.60} is not a valid {tag} ({error})")

    def construct_mapping(self, node: Any, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # the safe loader refuses the unhashable key itself
                if duplicate:
                    self.refuse(
                        key_node.start_mark, f"duplicate key {key!r:.80} (each key may appear once per mapping)"
                    )
        return super().construct_mapping(node, deep)

    def check_expansion(self, root: yaml.Node) -> None:
        """Refuse self-referring aliases and trees too large or too deep once aliases are expanded."""
        measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth), each shared node measured once
        open_nodes: set[int] = set()

        def measure(node: yaml.Node, depth: int) -> tuple[int, int]:
            key = id(node)
            if key in open_nodes:
                self.refuse(node.start_mark, "an alias refers to the mapping or list that contains it")
            if key not in measured:
                open_nodes.add(key)
                children = node.value if isinstance(node, yaml.SequenceNode) else []
                if isinstance(node, yaml.MappingNode):
                    children = [child for pair in node.value for child in pair]
                values, height = 1, 1
                for child in children:
                    child_values, child_height = measure(child, depth + 1)
                    values, height = values + child_values, max(height, child_height + 1)
                    if values > MAX_RECIPE_VALUES:
                        self.refuse(
                            node.start_mark,
                            f"aliases expand the recipe to more than {MAX_RECIPE_VALUES:,} values (the limit)",
                        )
                open_nodes.discard(key)
                measured[key] = (values, height)
            values, height = measured[key]
            if depth + height - 1 > MAX_RECIPE_DEPTH:
                self.refuse(
                    node.start_mark, f"aliases nest the recipe deeper than {MAX_RECIPE_DEPTH} levels (the limit)"
                )
            return values, height

        measure(root, 1)


def _yaml_problem(error: yaml.YAMLError) -> tuple[str, str]:
    """(" line N", problem) of a YAML error, on one line."""
    if isinstance(error, yaml.reader.ReaderError):
        return "", f"character {error.position}: {error.reason}"
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return (f" line {mark.line + 1}" if mark else ""), " ".join(str(problem).split())


def _load_yaml(text: str, where: str) -> Any:
    loader = RecipeLoader(text, where)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        loader.check_expansion(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def parse_yaml(text: str, where: str) -> Any:
    """Parse recipe YAML within the limits of :class:`RecipeLoader`; ``None`` for an empty document."""
    try:
        return _load_yaml(text, where)
    except yaml.YAMLError as error:
        line, problem = _yaml_problem(error)
        raise RecipeError(f"{where}{line}: not valid YAML ({problem})") from None


def _read_file(path: Path, where: str) -> str:
    try:
        size_bytes = path.stat().st_size
        if size_bytes > MAX_RECIPE_BYTES:
            raise RecipeError(
                f"{where}: {size_bytes:,} bytes is larger than a recipe may be ({MAX_RECIPE_BYTES:,} bytes, the limit)"
            )
        raw = path.read_bytes()
    except OSError as error:
        raise RecipeError(f"{where}: cannot read the file ({error.strerror or error})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecipeError(
            f"{where}: not UTF-8 text (byte {error.start} is 0x{raw[error.start]:02x}); save the recipe as UTF-8"
        ) from None


def read_recipe_text(source: str | Path) -> tuple[str, str]:
    """Return (text, where) for a recipe path or a built-in recipe name."""
    path = Path(source)
    if path.is_file():
        return _read_file(path, str(path)), str(path)
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
        value = _load_yaml(raw_value, f"--set '{key}'") if raw_value else ""
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
        if not isinstance(node, dict):
            reached = ".".join(parts[:depth])
            raise RecipeError(f"--set '{key}': '{reached}' is {node!r:.60}, which has no field '{part}'")
        if last:
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, (dict, list)):
                child = {}
                node[part] = child
            node = child


def _override_list(overrides: Any) -> list[str]:
    """``--set`` assignments as a list: one string is one assignment, anything but strings is refused."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if not isinstance(overrides, (list, tuple)):
        raise ConfigError(
            f"overrides: expected a list of 'FIELD=VALUE' strings, got {type(overrides).__name__} {overrides!r:.60}"
        )
    for assignment in overrides:
        if not isinstance(assignment, str):
            raise ConfigError(
                f"overrides: each is a 'FIELD=VALUE' string such as 'train.epochs=5', "
                f"got {type(assignment).__name__} {assignment!r:.60}"
            )
    return list(overrides)


def load_recipe(source: str | Path | dict | Recipe = "quickstart", overrides: list[str] | tuple | str = ()) -> Recipe:
    """Read a recipe (path, built-in name, mapping or Recipe) and validate it."""
    overrides = _override_list(overrides)
    if isinstance(source, Recipe):
        if not overrides:
            return source
        source = recipe_to_dict(source)
    if isinstance(source, dict):
        data, where = source, "recipe"
    elif isinstance(source, (str, Path)):
        text, where = read_recipe_text(source)
        data = parse_yaml(text, where)
        if data is None:
            raise RecipeError(f"{where}: the recipe is empty; give at least one field, e.g. 'name: my-recipe'")
        if not isinstance(data, dict):
            raise RecipeError(f"{where}: a recipe is a mapping of fields, got {type(data).__name__}")
    else:
        raise ConfigError(
            f"recipe: expected a file path, a built-in recipe name, a mapping or a Recipe, got {type(source).__name__}"
        )
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
