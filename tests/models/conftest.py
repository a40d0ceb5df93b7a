"""Model-source tests import torchvision's model definitions through the test-only operator stub."""

from __future__ import annotations

import pytest
from vision_shim import stub_torchvision_operators

VISION_IMPORTABLE = stub_torchvision_operators()


@pytest.fixture(scope="session")
def vision_importable() -> None:
    if not VISION_IMPORTABLE:
        pytest.skip("torchvision cannot be imported here")
