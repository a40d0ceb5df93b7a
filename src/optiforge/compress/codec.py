"""Lossless tensor encodings of the packed format: sparse positions, codebooks, bit-packed indices.

Every function works on the raw bits of the values, so decoding gives back
exactly the tensor that was encoded (``-0.0`` and NaN payloads included).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import zstandard

# float dtypes → integer dtypes of the same width, to compare values bit for bit
_BITS_OF = {
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float64: torch.int64,
}
DTYPES = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def raw_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's memory (contiguous, little-endian as stored on x86/ARM)."""
    flat = tensor.detach().contiguous().view(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def from_bytes(data: bytes, dtype: torch.dtype, count: int) -> torch.Tensor:
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype)[:count].clone()


def bit_view(tensor: torch.Tensor) -> torch.Tensor:
    """Float values as same-width integers (identity for integer tensors)."""
    flat = tensor.detach().contiguous().view(-1)
    return flat.view(_BITS_OF[flat.dtype]) if flat.dtype in _BITS_OF else flat


def shuffle_bytes(data: bytes, width: int) -> bytes:
    """Group byte 0 of every value, then byte 1, ...: exponents line up and compress far better."""
    if width <= 1 or not data:
        return data
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, width).T.tobytes()


def unshuffle_bytes(data: bytes, width: int) -> bytes:
    if width <= 1 or not data:
        return data
    return np.frombuffer(data, dtype=np.uint8).reshape(width, -1).T.tobytes()


def bitmap_encode(keep: torch.Tensor) -> bytes:
    """One bit per position, 1 = stored value."""
    return np.packbits(keep.numpy().astype(np.uint8)).tobytes()


def bitmap_decode(data: bytes, count: int) -> torch.Tensor:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:count]
    return torch.from_numpy(bits.astype(bool))


def gaps_encode(keep: torch.Tensor) -> bytes:
    """Relative indices: the distance from one stored position to the next, as LEB128 varints."""
    positions = torch.nonzero(keep.reshape(-1)).view(-1).numpy().astype(np.int64)
    gaps = np.diff(positions, prepend=-1) - 1  # 0 = the very next position
    if gaps.size == 0:
        return b""
    lengths = np.ones(gaps.size, dtype=np.int64)
    for power in (7, 14, 21, 28, 35, 42, 49, 56):
        lengths += gaps >= (1 << power)
    owner = np.repeat(np.arange(gaps.size), lengths)  # which gap each output byte belongs to
    starts = np.cumsum(lengths) - lengths
    rank = np.arange(owner.size) - starts[owner]  # 0 = least significant 7 bits
    out = (gaps[owner] >> (7 * rank)) & 0x7F
    out |= (rank < lengths[owner] - 1) * 0x80
    return out.astype(np.uint8).tobytes()


def gaps_decode(data: bytes, count: int) -> torch.Tensor:
    keep = np.zeros(count, dtype=bool)
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    if raw.size:
        last = (raw & 0x80) == 0
        owner = np.concatenate([[0], np.cumsum(last)[:-1]])
        starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
        rank = np.arange(raw.size) - starts[owner]
        gaps = np.zeros(int(last.sum()), dtype=np.int64)
        np.add.at(gaps, owner, (raw & 0x7F) << (7 * rank))
        keep[np.cumsum(gaps + 1) - 1] = True
    return torch.from_numpy(keep)


def index_bits(codebook_size: int) -> int:
    """⌈log2 k⌉ bits per index, at least 1."""
    return max(1, math.ceil(math.log2(codebook_size)))


def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """Each index in ``bits`` bits, most significant first, padded to a byte."""
    if indices.size == 0:
        return b""
    values = indices.astype(np.uint32)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    matrix = ((values[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
    return np.packbits(matrix.reshape(-1)).tobytes()


def unpack_indices(data: bytes, bits: int, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    matrix = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * bits].reshape(count, bits)
    weights = 1 << np.arange(bits - 1, -1, -1, dtype=np.int64)
    return (matrix.astype(np.int64) * weights[None, :]).sum(axis=1)


def quick_size(data: bytes) -> int:
    """Compressed size at a fast level, to choose between two encodings."""
    return len(zstandard.ZstdCompressor(level=3).compress(data)) if data else 0
