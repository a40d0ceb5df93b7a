"""The quantized artefact: the file whose size the report shows.

PyTorch int8 modules save their packed int8 weights in ``state_dict``.
torchao tensors are stored by their parts (codes, scales, zero points); int4
codes, which torchao keeps one per byte in memory, are packed two per byte,
so the file is what an int4 model really ships as.
``load_quantized_state`` reads such a file back as a float state dict.

The file holds only tensors (int8 and quantized tensors included), dtypes and
plain containers, so ``torch.load(path, weights_only=True)`` reads it and
loading it cannot run code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from optiforge.errors import ModelError
from optiforge.files import atomic_save
from optiforge.models.weights import read_weights

FORMAT = "optiforge-quantized-1"


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Signed int4 codes (int8 tensor, values -8..7) → uint8, two codes per byte."""
    flat = (codes.flatten().to(torch.int16) & 0xF).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_int4(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_int4`."""
    low, high = packed & 0xF, packed >> 4
    nibbles = torch.stack([low, high], dim=1).flatten()[: torch.Size(shape).numel()].to(torch.int16)
    return torch.where(nibbles > 7, nibbles - 16, nibbles).to(torch.int8).reshape(shape)


def _parts(tensor: torch.Tensor) -> dict | None:
    """A torchao quantized tensor as plain tensors (codes, scale, zero point) and its block size."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None or not hasattr(tensor, "qdata"):
        return None
    names, meta = flatten()
    entry = {name: getattr(tensor, name) for name in names}
    entry["block_size"] = list(meta.get("block_size", [1, tensor.shape[-1]]))
    entry["shape"] = list(tensor.shape)
    entry["dtype"] = str(meta.get("dtype", torch.float32)).removeprefix("torch.")
    if getattr(tensor, "target_dtype", None) == torch.int4:
        entry["int4_packed"] = pack_int4(entry.pop("qdata"))
    return entry


_PLAIN = (str, int, float, bool, type(None), torch.dtype, torch.Size)


def _check_plain(value: object, name: str) -> None:
    """Refuse what ``weights_only=True`` could not read back (any object but tensors, dtypes and containers)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, name)
            _check_plain(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item, name)
    elif torch.is_tensor(value):
        if type(value) not in (torch.Tensor, nn.Parameter):
            raise ModelError(f"save_quantized: '{name}' is a {type(value).__name__}, which cannot be stored as tensors")
    elif not isinstance(value, _PLAIN):
        raise ModelError(
            f"save_quantized: '{name}' is a {type(value).__name__}; the quantized file holds only tensors "
            "and plain values so that loading it cannot run code"
        )


def save_quantized(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s quantized state as tensors and plain values; returns the path.

    A model that ships as a program (PT2E int8: a ``save_program`` method) is written as a ``torch.export``
    program beside ``path``, with the suffix ``.pt2``.
    """
    save = getattr(model, "save_program", None)
    if callable(save):
        return save(Path(path).with_suffix(".pt2"))
    state = model.state_dict()
    if any(_parts(value) is not None for value in state.values() if torch.is_tensor(value)):
        tensors = {}
        for name, value in state.items():
            parts = _parts(value) if torch.is_tensor(value) else None
            tensors[name] = parts if parts is not None else value
        state = {"format": FORMAT, "tensors": tensors}
    _check_plain(state, "")
    return atomic_save(state, path)


def _dequantize(entry: dict) -> torch.Tensor:
    shape = tuple(entry["shape"])
    codes = unpack_int4(entry["int4_packed"], shape) if "int4_packed" in entry else entry["qdata"]
    codes = codes.float()
    block_rows, block_columns = entry["block_size"][-2:] if len(entry["block_size"]) > 1 else (1, shape[-1])
    scale = entry["scale"].float().reshape(shape[0] // block_rows, -1)
    zero_point = entry.get("zero_point")
    zero_point = zero_point.float().reshape(scale.shape) if zero_point is not None else torch.zeros_like(scale)
    scale = scale.repeat_interleave(block_rows, 0).repeat_interleave(block_columns, 1)[:, : shape[-1]]
    zero_point = zero_point.repeat_interleave(block_rows, 0).repeat_interleave(block_columns, 1)[:, : shape[-1]]
    return ((codes - zero_point) * scale).to(getattr(torch, entry["dtype"]))


def load_quantized_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A float state dict from a file written by :func:`save_quantized` (torchao layouts).

    The file is read with ``weights_only=True``: a file holding anything but
    tensors and plain values is refused with a ModelError, never run.
    """
    saved = read_weights(path, "quantized state")
    if not (isinstance(saved, dict) and saved.get("format") == FORMAT):
        return saved
    return {name: _dequantize(value) if isinstance(value, dict) else value for name, value in saved["tensors"].items()}
