"""Which layers of a model a compression verb may touch, named for error messages."""

from __future__ import annotations

import fnmatch

from torch import nn

from optiforge.compress.config import LayerSelection
from optiforge.errors import ConfigError, ModelError
from optiforge.registry import closest

WEIGHTED_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def check_names(model: nn.Module, names: list[str] | tuple[str, ...], field: str) -> None:
    """Refuse names (or patterns) that match no module of ``model``."""
    known = [name for name, _ in model.named_modules() if name]
    for pattern in names:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in known):
            raise ConfigError(
                f"{field}: no layer named '{pattern}'{closest(pattern, known)}; "
                f"layers: {', '.join(known[:12])}{', ...' if len(known) > 12 else ''}"
            )


def _excluded(name: str, module: nn.Module, selection: LayerSelection) -> bool:
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in selection.exclude):
        return True
    return type(module).__name__ in selection.exclude_types


def select_layers(
    model: nn.Module,
    selection: LayerSelection,
    types: tuple[type[nn.Module], ...] = WEIGHTED_TYPES,
    field: str = "layers",
    require: bool = True,
) -> dict[str, nn.Module]:
    """Name → module of the layers of ``types`` left after the exclusions, in model order."""
    check_names(model, selection.exclude, f"{field}.exclude")
    candidates = [(name, module) for name, module in model.named_modules() if isinstance(module, types)]
    if require and not candidates:
        kinds = ", ".join(t.__name__ for t in types)
        raise ModelError(f"{type(model).__name__} has no layer this technique can compress (looked for {kinds})")
    if selection.keep_first and candidates:
        candidates = candidates[1:]
    if selection.keep_last and candidates:
        candidates = candidates[:-1]
    chosen = {name: module for name, module in candidates if not _excluded(name, module, selection)}
    if require and not chosen:
        raise ModelError(f"every compressible layer of {type(model).__name__} is excluded by '{field}'; nothing to do")
    return chosen
