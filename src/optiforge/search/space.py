"""The search space: candidates as sequences of stages, each stage a kind and its validated config.

Candidates form a tree: two candidates whose first stages are equal share that prefix, and the search
computes it once. A step's key is the hash of its kind and full config, a prefix's key the hash of its
steps' keys, so equal prefixes are found whatever way the space was written.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from optiforge.errors import ConfigError

# (kind, fields, where) -> the kind's validated config; raises an OptiforgeError naming ``where``, and
# IncompatibleFields when each field is valid but the combination is not (an engine that cannot run a scheme)
ParseStep = Callable[[str, Any, str], BaseModel]


class IncompatibleFields(ConfigError):
    """A stage's fields are each valid but do not go together: that combination is left out of the space."""


LEAVE_OUT = "none"


@dataclass(frozen=True)
class Step:
    """One stage of a candidate."""

    kind: str
    config: BaseModel

    @property
    def fields(self) -> dict:
        return self.config.model_dump(mode="json")

    @property
    def key(self) -> str:
        text = json.dumps([self.kind, self.fields], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        changed = self.config.model_dump(mode="json", exclude_unset=True)
        inner = ", ".join(f"{name}={_short(value)}" for name, value in changed.items())
        return f"{self.kind}({inner})" if inner else self.kind


def _short(value: Any) -> str:
    return json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)


def prefix_key(steps: Sequence[Step]) -> str:
    """The key of a sequence of steps (the root, no steps, is ``"root"``)."""
    if not steps:
        return "root"
    return hashlib.sha256("/".join(step.key for step in steps).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CandidateSpec:
    """A named sequence of steps."""

    name: str
    steps: tuple[Step, ...]

    @property
    def key(self) -> str:
        return prefix_key(self.steps)


def _set_path(fields: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        inner = fields.get(part)
        fields[part] = dict(inner) if isinstance(inner, dict) else {}
        fields = fields[part]
    fields[path[-1]] = value


def _stage_entry(entry: Any, where: str) -> tuple[str, dict]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        ((kind, fields),) = entry.items()
        if fields is None or isinstance(fields, dict):
            return str(kind), dict(fields or {})
    raise ConfigError(f"{where}: each stage is one mapping '{{kind: {{...}}}}', got {entry!r:.100}")


def _product(template: list[Any], options: dict[str, list[Any]]) -> list[tuple[str, list[tuple[str, dict]]]]:
    stages = [_stage_entry(entry, f"search.stages[{index}]") for index, entry in enumerate(template)]
    kinds = [kind for kind, _ in stages]
    if options and len(set(kinds)) != len(kinds):
        raise ConfigError(f"search.stages: options name a stage by its kind, so each kind may appear once ({kinds})")
    for name in options:
        kind = name.split(".", 1)[0]
        if kind not in kinds:
            stages.append((kind, {}))
            kinds.append(kind)
    names = list(options)
    result = []
    for values in itertools.product(*(options[name] for name in names)) if names else [()]:
        chosen = {kind: dict(fields) for kind, fields in stages}
        left_out: set[str] = set()
        for name, value in zip(names, values, strict=True):
            kind, _, path = name.partition(".")
            if (isinstance(value, str) and value.lower() == LEAVE_OUT) or (value is None and not path):
                left_out.add(kind)
            elif not path:  # a whole-stage option: each value is that stage's fields
                if not isinstance(value, dict):
                    raise ConfigError(f"search.options.{name}: each value is a mapping of {kind}'s fields or none")
                chosen[kind].update(value)
            else:
                _set_path(chosen[kind], path.split("."), value)
        label = ", ".join(f"{name}={_short(value)}" for name, value in zip(names, values, strict=True)) or "stages"
        result.append((label, [(kind, chosen[kind]) for kind in kinds if kind not in left_out]))
    return result


def expand_space(
    candidates: Sequence[Sequence[Any]],
    template: Sequence[Any],
    options: dict[str, list[Any]],
    parse: ParseStep,
) -> tuple[list[CandidateSpec], list[dict]]:
    """The candidates of a space, and the combinations left out because their fields do not go together.

    A mistake in a field (an unknown name, a value out of range) raises a :class:`ConfigError` naming it,
    as does a space whose every combination is left out.
    """
    raw: list[tuple[str, list[tuple[str, dict]]]] = []
    for index, entries in enumerate(candidates):
        raw.append((f"candidates[{index}]", [_stage_entry(e, f"search.candidates[{index}]") for e in entries]))
    if options or template:
        raw += _product(list(template), dict(options))
    specs: list[CandidateSpec] = []
    invalid: list[dict] = []
    seen: set[str] = set()
    for label, entries in raw:
        try:
            steps = tuple(parse(kind, fields, f"search ({label}).{kind}") for kind, fields in entries)
        except IncompatibleFields as error:
            invalid.append({"name": label, "error": str(error)})
            continue
        spec = CandidateSpec(label, tuple(Step(kind, config) for (kind, _), config in zip(entries, steps, strict=True)))
        if spec.key not in seen:  # the same stages written twice are measured once
            seen.add(spec.key)
            specs.append(spec)
    if not specs:
        raise ConfigError(f"search: the space holds no candidate that can run: {invalid[0]['error']}")
    return _named(specs), invalid


def _named(specs: list[CandidateSpec]) -> list[CandidateSpec]:
    """Names from the steps themselves (``prune(sparsity=0.3)+quantize(scheme=bf16)``) when they are unique."""
    names = ["+".join(step.label for step in spec.steps) or "unchanged" for spec in specs]
    if len(set(names)) != len(names):
        return specs
    return [CandidateSpec(name, spec.steps) for name, spec in zip(names, specs, strict=True)]


EPOCH_FIELDS = ("epochs", "finetune_epochs")


def _shorten_fields(fields: Any, fraction: float) -> Any:
    if isinstance(fields, dict):
        return {
            name: max(1, math.ceil(value * fraction))
            if name in EPOCH_FIELDS and isinstance(value, int) and not isinstance(value, bool) and value > 0
            else _shorten_fields(value, fraction)
            for name, value in fields.items()
        }
    return fields


# (step, fraction) -> the step its proxy runs; the stage module knows which epochs fields take effect
ShortenStep = Callable[[Step, float], Step]


def shorten_step(step: Step, fraction: float) -> Step:
    """``step`` with every ``epochs``/``finetune_epochs`` field scaled by ``fraction`` (rounded up, at least 1)."""
    return Step(step.kind, type(step.config).model_validate(_shorten_fields(step.fields, fraction)))


def shorten(spec: CandidateSpec, fraction: float, shorten: ShortenStep = shorten_step) -> CandidateSpec:
    """The proxy of ``spec``: each of its steps shortened (same name)."""
    return CandidateSpec(spec.name, tuple(shorten(step, fraction) for step in spec.steps))
