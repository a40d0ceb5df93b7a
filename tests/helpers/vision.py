"""Whether torchvision's model definitions import here (through the root conftest's operator stub)."""

from __future__ import annotations

import importlib

import pytest


def _importable() -> bool:
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001  no usable torchvision: the tests that need it skip
        return False
    return True


needs_vision = pytest.mark.skipif(not _importable(), reason="torchvision cannot be imported here")
