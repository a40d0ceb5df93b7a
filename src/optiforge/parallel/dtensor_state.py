"""Checkpoints of models whose parameters are DTensors (FSDP2 shards, tensor-parallel pieces).

Each process writes its own shards with ``torch.distributed.checkpoint``
(DCP) into ``sharded-<epoch>/`` beside the loop's checkpoint file, which only
records the folder's name. DCP reshards on load, so a run saved on N processes
resumes on M. The finished model is gathered into a plain module with full
tensors, which is what the runner measures and exports.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from optiforge.errors import TrainingError

_FOLDER = re.compile(r"^sharded-(\d+)$")


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path, tag: int) -> dict:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    name = f"sharded-{tag}"
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder / name))
    if dist.get_rank() == 0:
        # Keep this one and the one the current checkpoint file still names (until it is replaced).
        for path in folder.iterdir():
            match = _FOLDER.match(path.name)
            if match and int(match.group(1)) < tag - 1:
                shutil.rmtree(path, ignore_errors=True)
    return {"sharded": name}


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, saved: object, folder: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (isinstance(saved, dict) and "sharded" in saved):
        raise TrainingError(
            f"checkpoint in '{folder}' was written by another parallel strategy; resume with the strategy "
            "that wrote it, or start a new run folder"
        )
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(state, checkpoint_id=str(folder / saved["sharded"]))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def meta_copy(model: nn.Module) -> nn.Module:
    """A weightless copy of the model's structure, filled later by :func:`gather_full`."""
    template = copy.deepcopy(model)
    return template.to("meta")


def gather_full(model: nn.Module, template: nn.Module) -> nn.Module:
    """A plain module with full CPU tensors; every process takes part and gets one."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    plain = copy.deepcopy(template)
    plain.load_state_dict({key: value.detach().cpu() for key, value in full.items()}, assign=True)
    return plain
