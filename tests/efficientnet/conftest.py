"""Fixtures for the EfficientNet-Lite0 tests: one model load and one small photos dataset per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def efficientnet():
    from optiforge.models.efficientnet import load_efficientnet_lite0

    return load_efficientnet_lite0()


@pytest.fixture(scope="session")
def small_photos():
    from optiforge.data.photos import photos

    return photos(views=12, seed=0)
