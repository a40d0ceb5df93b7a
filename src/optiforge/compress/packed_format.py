"""The packed file: what compression made cheap, stored cheaply, and checked on load.

Layout (all integers little-endian; see docs/compression.md):

    magic      8 bytes   b"OFPACK" + format version (uint16)
    checksum   8 bytes   BLAKE2b-64 of every byte after it
    sections   uint32 count, then one uint32 compressed length per section
    body       the sections, each a zstandard frame:
               0 header (JSON), 1 architecture, 2 positions, 3 indices, 4 codebooks, 5 values

The header lists every tensor with its encoding and its byte ranges in the
(decompressed) sections. Encodings are chosen per tensor and are lossless:
``dense`` (byte-shuffled values; float16 when every float32 value is exactly
a float16), ``sparse`` (positions + non-zero values), ``shared`` (codebook +
⌈log2 k⌉-bit indices) and ``sparse_shared`` (positions + codebook + indices).
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import zstandard

from optiforge.errors import OptiforgeError

MAGIC = b"OFPACK"
VERSION = 1
SECTIONS = ("header", "architecture", "positions", "indices", "codebooks", "values")
_LEVEL = 19


class PackedFileError(OptiforgeError):
    """A packed file is corrupted, truncated, or does not fit the model given."""


def _read_sections(path: Path) -> tuple[dict, dict[str, bytes]]:
    if not path.is_file():
        raise PackedFileError(f"no packed file '{path}'")
    content = path.read_bytes()
    if len(content) < 20 or content[:6] != MAGIC:
        raise PackedFileError(f"'{path}' is not an optiforge packed file (wrong magic bytes)")
    (version,) = struct.unpack("<H", content[6:8])
    if version > VERSION:
        raise PackedFileError(f"'{path}' is packed format version {version}; this optiforge reads up to {VERSION}")
    body = content[16:]
    if hashlib.blake2b(body, digest_size=8).digest() != content[8:16]:
        raise PackedFileError(f"'{path}' is corrupted (checksum mismatch); refusing to load it")
    try:  # past the checksum only a file written on purpose can be malformed; it gets one error, not a traceback
        (count,) = struct.unpack("<I", body[:4])
        lengths = struct.unpack(f"<{count}I", body[4 : 4 + 4 * count])
        offset, sections = 4 + 4 * count, {}
        decompressor = zstandard.ZstdDecompressor()
        for name, length in zip(SECTIONS, lengths, strict=True):
            sections[name] = decompressor.decompress(body[offset : offset + length])
            offset += length
        header = json.loads(sections["header"])
    except (struct.error, zstandard.ZstdError, ValueError) as error:
        raise PackedFileError(f"'{path}' is malformed ({type(error).__name__}: {error})") from None
    if not isinstance(header, dict) or not isinstance(header.get("tensors"), list):
        raise PackedFileError(f"'{path}' is malformed (its header lists no tensors)")
    return header, sections
