"""Writing files atomically: a temporary file in the same folder, fsync, then rename.

A process killed at any moment leaves either the previous complete file or
the new one, never a half-written file.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch


def atomic_write(path: str | Path, write) -> Path:  # noqa: ANN001 - write(file object)
    """Call ``write(file)`` on a temporary file, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda file: _torch_save(obj, file))


def _torch_save(obj: Any, file: Any) -> None:
    try:
        torch.save(obj, file)
    except RuntimeError as error:
        # torch 2.13's zip writer reports a failed write (a full disk) as RuntimeError
        # ("PytorchStreamWriter failed writing file ...: file write failed"): give it back as the OSError it is
        if "write failed" not in str(error):
            raise
        raise OSError(
            errno.ENOSPC, "the file could not be written (disk full?)", str(getattr(file, "name", ""))
        ) from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


# mkstemp's names above: "." + the target's name + "." + eight random characters + ".tmp"
_TEMPORARY_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_temporary_files(folder: str | Path) -> list[Path]:
    """Remove the temporary files that killed :func:`atomic_write` calls left under ``folder``; return them."""
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp")):
        if path.is_file() and _TEMPORARY_NAME.fullmatch(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# files that hold an artefact's weights beside the file named: OpenVINO IR's .bin, ONNX's external data
_COMPANIONS = {".xml": (".bin",), ".onnx": (".onnx.data", ".data", ".onnx_data")}


def artifact_size_bytes(path: str | Path) -> int:
    """Bytes on disk of the artefact at ``path``, with the weight files that ship beside it.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "model.xml").write_bytes(b"x" * 10), (folder / "model.bin").write_bytes(b"w" * 90)
    >>> artifact_size_bytes(folder / "model.xml")
    100
    """
    path = Path(path)
    size = path.stat().st_size
    for suffix in _COMPANIONS.get(path.suffix, ()):
        companion = path.with_name(path.stem + suffix) if suffix.startswith(path.suffix) else path.with_suffix(suffix)
        if companion.is_file():
            size += companion.stat().st_size
    return size
