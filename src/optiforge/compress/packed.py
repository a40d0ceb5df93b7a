"""The packed file: what compression made cheap, stored cheaply, and checked on load.

:func:`write_packed` and :func:`load_packed`; the byte layout is described in
:mod:`optiforge.compress.packed_format`, the per-tensor encodings live in
:mod:`optiforge.compress.packed_codecs` and the stored architecture in
:mod:`optiforge.compress.packed_architecture`.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import zstandard
from torch import nn

from optiforge.compress.packed_architecture import (
    _ArchitectureUnpickler,
    _flatten_recurrent,
    _refuse_graphs,
    _refuse_hooks,
    _restore_hooks,
    _set_tensor,
    _skeleton,
)
from optiforge.compress.packed_codecs import _decoded, _encode_tensor, _Streams
from optiforge.compress.packed_format import _LEVEL, MAGIC, SECTIONS, VERSION, PackedFileError, _read_sections
from optiforge.exporters.base import register_exporter
from optiforge.files import atomic_write

__all__ = ["PackedFileError", "describe_packed", "export_packed", "load_packed", "read_packed_tensors", "write_packed"]


def write_packed(model: nn.Module, path: str | Path, applied: Sequence[dict] = ()) -> Path:
    """Write ``model`` (architecture and every parameter and buffer) as a packed file.

    ``applied`` lists the compression configs applied to the model, oldest
    first (``[result.applied, ...]`` of the ``*_with_result`` verbs); the
    header keeps them under ``compression``.

    >>> import torch, optiforge
    >>> from optiforge.compress import write_packed, load_packed
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    >>> path = write_packed(model, "/tmp/of-doc.ofpk")
    >>> torch.equal(load_packed(path)[0].weight, model[0].weight)
    True

    A model whose weights live outside PyTorch tensors (an ONNX Runtime graph)
    is refused: the file would hold no tensors.
    """
    _refuse_graphs(model, Path(path))
    streams = _Streams()
    records, seen = [], {}
    named = [("param", name, tensor) for name, tensor in model.named_parameters(remove_duplicate=False)]
    named += [("buffer", name, tensor) for name, tensor in model.named_buffers(remove_duplicate=False)]
    for kind, name, tensor in named:
        if tensor is None:
            continue
        if id(tensor) in seen:  # tied weights are stored once
            seen[id(tensor)].setdefault("aliases", []).append(name)
            continue
        record = _encode_tensor(name, tensor, streams)
        record["kind"] = kind
        if kind == "param" and not tensor.requires_grad:
            record["frozen"] = True
        records.append(record)
        seen[id(tensor)] = record
    header = {
        "format": "optiforge-packed",
        "version": VERSION,
        "torch": torch.__version__,
        "model": type(model).__name__,
        "compression": list(applied),
        "tensors": records,
    }
    raw = [json.dumps(header, separators=(",", ":")).encode(), _skeleton(model)]
    raw += [bytes(streams.parts[name]) for name in SECTIONS[2:]]
    compressor = zstandard.ZstdCompressor(level=_LEVEL)
    frames = [compressor.compress(data) for data in raw]
    table = struct.pack(f"<I{len(frames)}I", len(frames), *(len(frame) for frame in frames))
    body = table + b"".join(frames)
    digest = hashlib.blake2b(body, digest_size=8).digest()
    content = MAGIC + struct.pack("<H", VERSION) + digest + body
    return atomic_write(path, lambda file: file.write(content))


def describe_packed(path: str | Path) -> dict:
    """The header of a packed file (tensors, encodings, byte ranges), after checking it."""
    header, sections = _read_sections(Path(path))
    header["section_bytes"] = {name: len(data) for name, data in sections.items()}
    return header


def read_packed_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Name → tensor for every parameter and buffer in a packed file (aliases included)."""
    header, sections = _read_sections(Path(path))
    tensors = {}
    for record, tensor in _decoded(header, sections, Path(path)):
        for name in [record["name"], *record.get("aliases", [])]:
            tensors[name] = tensor
    return tensors


def load_packed(path: str | Path, model: nn.Module | None = None, *, trusted: bool = False) -> nn.Module:
    """Rebuild the module stored by :func:`write_packed`; its outputs equal the original's.

    With ``model`` the tensors are loaded into that module (same architecture
    required) and the stored architecture is not read. Otherwise the stored
    architecture is rebuilt from an exact allowlist (torch.nn layer classes,
    optiforge's module classes, a few activation functions, containers); no
    constructor and nothing else named in the file is called, so loading a file
    from anyone cannot run code. ``trusted=True`` allows any class, and so
    **runs code from the file**: use it only for files you made.

    The checksum detects corruption; it has no key, so it says nothing about
    who wrote the file.
    """
    path = Path(path)
    header, sections = _read_sections(path)
    if model is None:
        data = sections["architecture"]
        try:
            model = pickle.loads(data) if trusted else _ArchitectureUnpickler(data, path).load()
        except PackedFileError:
            raise
        except Exception as error:
            raise PackedFileError(
                f"'{path}': the stored architecture cannot be rebuilt ({type(error).__name__}: {error})"
            ) from None
        if not isinstance(model, nn.Module):
            raise PackedFileError(f"'{path}': the stored architecture is a {type(model).__name__}, not a module")
        for record, tensor in _decoded(header, sections, path):
            if record["kind"] == "param":  # one Parameter for all its names keeps tied weights tied
                tensor = nn.Parameter(tensor, requires_grad=not record.get("frozen", False))
            for name in [record["name"], *record.get("aliases", [])]:
                try:
                    _set_tensor(model, name, tensor, record["kind"])
                except (AttributeError, TypeError) as error:
                    raise PackedFileError(
                        f"'{path}': tensor '{name}' has no place in the stored architecture"
                    ) from error
        _refuse_hooks(model, path)
        _restore_hooks(model)
        _flatten_recurrent(model)
        return model.eval()
    tensors = {
        name: tensor
        for record, tensor in _decoded(header, sections, path)
        for name in [record["name"], *record.get("aliases", [])]
    }
    current = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    missing = sorted(set(current) - set(tensors))
    if missing or any(tensors[name].shape != current[name].shape for name in current):
        wrong = missing[0] if missing else next(n for n in current if tensors[n].shape != current[n].shape)
        raise PackedFileError(f"'{path}' does not fit the model given: tensor '{wrong}' is missing or of another shape")
    with torch.no_grad():
        for name, tensor in current.items():
            tensor.copy_(tensors[name])
    _flatten_recurrent(model)
    return model


@register_exporter("packed", ".ofpk")
def export_packed(model: nn.Module, path: Path, example_input: Any = None) -> Path:
    """Export format ``packed``: sparse positions, shared-value indices and the other tensors, entropy-coded."""
    return write_packed(model, path)
