"""Checkpoints and RNG states.

Checkpoints are written atomically (:mod:`optiforge.files`), so a run killed
at any moment leaves either the previous complete checkpoint or the new one.
Loading uses ``weights_only=True`` (:mod:`optiforge.models.weights`) so a checkpoint cannot run code,
and a checkpoint that does not fit the run is one TrainingError, not a traceback.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from optiforge.errors import OptiforgeError, TrainingError
from optiforge.models.weights import describe_misfit, read_weights
from optiforge.parallel import Strategy

CHECKPOINT_KEYS = (
    "epoch",
    "step",
    "finished",
    "model",
    "optimizer",
    "schedule",
    "scaler",
    "rng",
    "history",
    "best_metric",
    "best_weights",
    "epochs_without_improvement",
    "callbacks",
)


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint written by the loop; anything else (truncated, foreign, code) is a TrainingError."""
    saved = read_weights(path, "checkpoint", TrainingError)
    if not isinstance(saved, dict):
        raise TrainingError(
            f"checkpoint: '{path}' holds a {type(saved).__name__}, not an optiforge training checkpoint"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in saved]
    if missing:
        raise TrainingError(
            f"checkpoint: '{path}' is not an optiforge training checkpoint (it lacks {', '.join(map(repr, missing))}); "
            "resume only from a run folder optiforge wrote, or start without --resume"
        )
    return saved


def restore_training_state(
    strategy: Strategy, model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict, path: Path
) -> None:
    """Put the checkpoint's model and optimizer state back; a checkpoint of another model is a TrainingError."""
    model_state, optimizer_state = saved["model"], saved["optimizer"]
    try:
        strategy.load_checkpoint_state(model, optimizer, model_state, optimizer_state, path.parent)
    except OptiforgeError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as failure:
        problem = describe_misfit(model, model_state) if isinstance(model_state, Mapping) else None
        if problem is None:
            problem = f"{str(failure).splitlines()[0]}: the checkpoint is from another recipe, model or optimizer"
        raise TrainingError(f"--resume: checkpoint '{path}' does not fit this run: {problem}") from None


@contextlib.contextmanager
def resuming(path: Path) -> Iterator[None]:
    """Restoring the rest of a checkpoint (schedule, scaler, RNG, callbacks): a misfit is one TrainingError."""
    try:
        yield
    except OptiforgeError:
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as failure:
        raise TrainingError(
            f"--resume: checkpoint '{path}' does not fit this run ({type(failure).__name__}: "
            f"{str(failure).splitlines()[0] if str(failure) else ''}): the checkpoint is from another recipe"
        ) from None


def rng_state() -> dict:
    """Python, NumPy and torch RNG states as weights-only-loadable values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
