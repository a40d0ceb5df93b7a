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


def artifact_size_bytes(path: str | Path) -> int | None:
    """Bytes of a saved model: the file, and for an OpenVINO IR (``.xml``) the ``.bin`` of weights beside it."""
    path = Path(path)
    if not path.is_file():
        return None
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix == ".xml" and weights.is_file() else 0)
