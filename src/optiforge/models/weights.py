"""Reading state-dict files without running code, and checking they fit a model.

Every ``torch.load`` in optiforge goes through :func:`read_weights`, which uses
``weights_only=True``: the file may hold tensors, dtypes and plain containers,
nothing that is rebuilt by calling Python. Every failure is one
:class:`~optiforge.errors.OptiforgeError` naming the file and what is wrong.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.errors import ModelError, OptiforgeError

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_ANOTHER = "the checkpoint is from another recipe or model"


def read_weights(path: str | Path, what: str, error: type[OptiforgeError] = ModelError) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; any failure raises ``error`` naming ``what`` and the path."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what}: no file '{path}'")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as failure:
        text = str(failure)
        if "Weights only load failed" not in text:
            raise error(f"{what}: '{path}' is not a PyTorch file written by torch.save") from None
        found = _GLOBAL.search(text)
        if found is None:
            raise error(
                f"{what}: '{path}' is not a PyTorch file of tensors (torch.save of a state dict); nothing in it was run"
            ) from None
        raise error(
            f"{what}: '{path}' cannot be read: it holds Python objects other than tensors (it asks for "
            f"{found.group(1)}), and loading them could run code from the file. Save a plain state dict instead"
        ) from None
    except (EOFError, zipfile.BadZipFile) as failure:
        raise error(f"{what}: '{path}' is truncated or empty ({type(failure).__name__})") from None
    except RuntimeError as failure:
        if "zip archive" in str(failure) or "central directory" in str(failure):
            raise error(f"{what}: '{path}' is truncated or corrupted (not a complete torch.save file)") from None
        raise error(f"{what}: '{path}' cannot be read ({str(failure).splitlines()[0]})") from None
    except Exception as failure:  # a foreign file fails in the unpickler with whatever its bytes trigger
        raise error(
            f"{what}: '{path}' is not a PyTorch file written by torch.save ({type(failure).__name__})"
        ) from None


def model_state(saved: Any, path: str | Path, what: str, error: type[OptiforgeError] = ModelError) -> dict:
    """The state dict in ``saved``: a state dict itself, or the ``model`` entry of a training checkpoint."""
    if isinstance(saved, Mapping) and isinstance(saved.get("model"), Mapping):
        saved = saved["model"]
    if not isinstance(saved, Mapping) or not all(isinstance(name, str) for name in saved):
        raise error(f"{what}: '{path}' holds a {type(saved).__name__}, not a state dict (names to tensors)")
    return dict(saved)


def _first(names: list[str]) -> str:
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return f"'{names[0]}'{more}"


def describe_misfit(model: nn.Module, state: Mapping) -> str | None:
    """Why ``state`` does not load into ``model`` (the first wrong shape, missing or extra name), or None."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        stored = state.get(name)
        if torch.is_tensor(tensor) and torch.is_tensor(stored) and stored.shape != tensor.shape:
            return (
                f"layer '{name}' has shape {tuple(stored.shape)} in the file and {tuple(tensor.shape)} "
                f"in the model: {_ANOTHER}"
            )
    missing = [name for name in expected if name not in state]
    if missing:
        return f"it lacks {_first(missing)}, which the model has: {_ANOTHER}"
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        return f"it has {_first(unexpected)}, which the model lacks: {_ANOTHER}"
    return None


def load_weights_into(
    model: nn.Module, state: Mapping, path: str | Path, what: str, error: type[OptiforgeError] = ModelError
) -> nn.Module:
    """``model.load_state_dict(state)`` after checking names and shapes; a misfit raises ``error``."""
    problem = describe_misfit(model, state)
    if problem is None:
        try:
            model.load_state_dict(state)
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as failure:
            problem = str(failure).splitlines()[0]
    if problem is not None:
        raise error(f"{what}: '{path}' does not fit the model: {problem}")
    return model


def load_checkpoint_into(model: nn.Module, path: str | Path, what: str) -> nn.Module:
    """Load the state dict (or training checkpoint) at ``path`` into ``model``; every problem is a ModelError."""
    state = model_state(read_weights(path, what), path, what)
    return load_weights_into(model, state, path, what)
