"""Model-source tests need torchvision's model definitions (importable through the root conftest's stub)."""

from __future__ import annotations

import importlib

import pytest


@pytest.fixture(scope="session")
def vision_importable() -> None:
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001  no usable torchvision here: the tests that need it skip
        pytest.skip("torchvision cannot be imported here")
