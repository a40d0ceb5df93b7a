"""Per-tensor encodings of a packed file: dense, sparse, shared and sparse_shared, and their decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from optiforge.compress import codec
from optiforge.compress.packed_format import SECTIONS, PackedFileError
from optiforge.errors import ModelError


class _Streams:
    """Byte streams being built; ``add`` returns the [offset, length] of what it appended."""

    def __init__(self) -> None:
        self.parts: dict[str, bytearray] = {name: bytearray() for name in SECTIONS[2:]}

    def add(self, section: str, data: bytes) -> list[int]:
        start = len(self.parts[section])
        self.parts[section] += data
        return [start, len(data)]


def _exact_half(values: torch.Tensor) -> torch.Tensor | None:
    """``values`` as float16 when that loses nothing, else None."""
    if values.dtype != torch.float32:
        return None
    half = values.half()
    return half if torch.equal(codec.bit_view(half.float()), codec.bit_view(values)) else None


def _encode_values(values: torch.Tensor, streams: _Streams, record: dict) -> None:
    """Store float or integer values: shared through a codebook, or dense."""
    count = values.numel()
    width = values.element_size()
    half = _exact_half(values) if values.is_floating_point() else None
    dense_bytes = count * (2 if half is not None else width)
    if values.is_floating_point() and count:
        unique, inverse = torch.unique(codec.bit_view(values), return_inverse=True)
        k = unique.numel()
        bit_count = codec.index_bits(max(k, 2))
        # a codebook pays when the indices plus the codebook are clearly smaller than the values
        if k <= 65536 and count * bit_count / 8 + k * width < 0.75 * dense_bytes:
            record["codebook"] = streams.add("codebooks", codec.raw_bytes(unique.view(values.dtype)))
            record["k"], record["bits"] = k, bit_count
            record["indices"] = streams.add("indices", codec.pack_indices(inverse.numpy(), bit_count))
            return
    if half is not None:
        record["stored_as"] = "float16"
        record["values"] = streams.add("values", codec.shuffle_bytes(codec.raw_bytes(half), 2))
        return
    record["values"] = streams.add("values", codec.shuffle_bytes(codec.raw_bytes(values), width))


def _encode_tensor(name: str, tensor: torch.Tensor, streams: _Streams) -> dict:
    tensor = tensor.detach().cpu().contiguous()
    record: dict[str, Any] = {"name": name, "dtype": codec.dtype_name(tensor.dtype), "shape": list(tensor.shape)}
    flat = tensor.view(-1)
    if tensor.dtype == torch.bool or tensor.dtype not in codec.DTYPES.values():
        if tensor.dtype not in codec.DTYPES.values():
            raise ModelError(f"packed format: tensor '{name}' has dtype {tensor.dtype}, which it cannot store")
        record["encoding"] = "dense"
        record["values"] = streams.add("values", codec.raw_bytes(flat))
        return record
    keep = flat != 0  # -0.0 counts as zero and comes back as +0.0, equal in value
    stored = int(keep.sum())
    if tensor.is_floating_point() and stored < 0.6 * flat.numel():
        bitmap, gaps = codec.bitmap_encode(keep), codec.gaps_encode(keep)
        use_gaps = codec.quick_size(gaps) < codec.quick_size(bitmap)
        record["positions"] = streams.add("positions", gaps if use_gaps else bitmap)
        record["position_code"] = "gaps" if use_gaps else "bitmap"
        flat = flat[keep]
    _encode_values(flat, streams, record)
    sparse, shared = "positions" in record, "codebook" in record
    record["encoding"] = {
        (False, False): "dense",
        (True, False): "sparse",
        (False, True): "shared",
        (True, True): "sparse_shared",
    }[(sparse, shared)]
    return record


def _decode_tensor(record: dict, sections: dict[str, bytes]) -> torch.Tensor:
    dtype = codec.DTYPES[record["dtype"]]
    shape = record["shape"]
    count = int(np.prod(shape)) if shape else 1

    def part(section: str, key: str) -> bytes:
        start, length = record[key]
        return sections[section][start : start + length]

    keep = None
    stored = count
    if "positions" in record:
        data = part("positions", "positions")
        keep = codec.gaps_decode(data, count) if record["position_code"] == "gaps" else codec.bitmap_decode(data, count)
        stored = int(keep.sum())
    if "codebook" in record:
        codebook = codec.from_bytes(part("codebooks", "codebook"), dtype, record["k"])
        indices = codec.unpack_indices(part("indices", "indices"), record["bits"], stored)
        values = codebook[torch.from_numpy(indices)]
    elif record.get("stored_as") == "float16":
        raw = codec.unshuffle_bytes(part("values", "values"), 2)
        values = codec.from_bytes(raw, torch.float16, stored).float()
    else:
        width = torch.empty(0, dtype=dtype).element_size()
        raw = part("values", "values")
        if dtype != torch.bool:
            raw = codec.unshuffle_bytes(raw, width)
        values = codec.from_bytes(raw, dtype, stored)
    if keep is None:
        return values.view(shape)
    full = torch.zeros(count, dtype=dtype)
    full[keep] = values
    return full.view(shape)


def _decoded(header: dict, sections: dict[str, bytes], path: Path) -> list[tuple[dict, torch.Tensor]]:
    """(record, tensor) for every tensor record in the header."""
    try:
        return [(record, _decode_tensor(record, sections)) for record in header["tensors"]]
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as error:
        raise PackedFileError(f"'{path}' holds a malformed tensor record ({type(error).__name__}: {error})") from None
