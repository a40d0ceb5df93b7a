"""Checkpoints of models whose parameters are DTensors (FSDP2 shards, tensor-parallel pieces).

Each process writes its own shards with ``torch.distributed.checkpoint``
(DCP) into ``sharded-<epoch>/`` beside the loop's checkpoint file, which only
records the folder's name. DCP reshards on load, so a run saved on N processes
resumes on M. The finished model is gathered into a plain module with full
tensors, which is what the runner measures and exports.
"""

from __future__ import annotations

import copy
import io
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from optiforge.errors import TrainingError

_FOLDER = re.compile(r"^sharded-(\d+)$")

# What a DCP ``.metadata`` file may name (torch 2.13); anything else is refused, so reading it runs no code.
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "BytesStorageMetadata",
        "ChunkStorageMetadata",
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_CLASSES:
            return super().find_class(module, name)
        if module == "torch" and "." not in name and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise TrainingError(f"sharded checkpoint metadata names '{module}.{name}', which a checkpoint never holds")


def _safe_reader(path: Path):
    """DCP's file reader, reading ``.metadata`` through an allowlist instead of a plain ``pickle.load``."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class Reader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any):  # noqa: ANN202 - DCP's Metadata
            with self.fs.create_stream(self._get_metadata_path(kwargs.get("rank")), "rb") as file:
                try:
                    metadata = _MetadataUnpickler(file).load()
                except TrainingError:
                    raise
                except Exception as error:
                    raise TrainingError(f"sharded checkpoint '{path}' cannot be read ({error})") from None
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return Reader(str(path))


def _weights_only_planner():
    """DCP's load planner, with non-tensor entries (optimizer steps, settings) read ``weights_only``."""
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element

    class Planner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            loaded = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    return Planner()


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
    path = folder / saved["sharded"]
    reader = _safe_reader(path)
    reader.read_metadata()  # refused here, by name, before DCP wraps the error in its own
    try:
        dcp.load(state, storage_reader=reader, planner=_weights_only_planner())
    except Exception as error:
        raise TrainingError(f"sharded checkpoint '{path}' cannot be loaded: {str(error).splitlines()[0]}") from None
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
