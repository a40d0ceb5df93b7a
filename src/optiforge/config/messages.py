"""Pydantic validation errors as one line per problem: the field's path, what was wrong, what is allowed."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from optiforge.registry import closest


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_class(argument)
        if found is not None:
            return found
    return None


def _class_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    cls: type[BaseModel] | None = root
    for part in loc:
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            continue
        cls = _model_class(cls.model_fields[part].annotation)
    return cls


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    cls = _class_at(root, loc)
    return sorted(cls.model_fields) if cls is not None else []


def _path(prefix: str, loc: tuple) -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union")):
            text += f".{part}" if text else str(part)
    return text


def _renamed_path(prefix: str, parent: tuple, renamed: str) -> str:
    """Where a renamed field lives now; each leading ``../`` climbs out of one section (a move to a sibling)."""
    while renamed.startswith("../"):
        renamed = renamed.removeprefix("../")
        if not parent:  # built from Python: the new section's name is the whole answer
            return renamed
        parent = parent[:-1]
    return _path(prefix, parent + (renamed,))


def describe_validation_error(error: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: the field path, what was wrong, what is allowed."""
    lines = []
    for problem in error.errors():
        loc = tuple(problem["loc"])
        path = _path(prefix, loc)
        renamed = getattr(_class_at(root, loc[:-1]), "renamed_fields", {}).get(str(loc[-1])) if loc else None
        if not loc:  # a check over the whole config: its message names the fields
            lines.append(f"{path or 'recipe'}: {problem['msg'].removeprefix('Value error, ')}")
        elif problem["type"] == "extra_forbidden" and renamed:
            lines.append(f"field '{path}' is now '{_renamed_path(prefix, loc[:-1], renamed)}'")
        elif problem["type"] == "extra_forbidden":
            allowed = _fields_at(root, loc[:-1])
            lines.append(f"unknown field '{path}'{closest(str(loc[-1]), allowed)}; allowed: {', '.join(allowed)}")
        elif problem["type"] == "missing":
            lines.append(f"missing field '{path}'")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{path or 'recipe'}: {message} (got {problem.get('input')!r:.100})")
    return "; ".join(lines)
