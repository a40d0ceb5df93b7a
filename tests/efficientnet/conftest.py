"""Fixtures for the EfficientNet-Lite0 tests: one model load and one small photos dataset per session."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def photos_cache(tmp_path_factory):
    """The photos dataset caches its targets; tests keep that cache in a folder of their own."""
    previous = os.environ.get("OPTIFORGE_CACHE_DIR")
    os.environ["OPTIFORGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("OPTIFORGE_CACHE_DIR", None)
    else:
        os.environ["OPTIFORGE_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def efficientnet():
    from optiforge.models.efficientnet import load_efficientnet_lite0

    return load_efficientnet_lite0()


@pytest.fixture(scope="session")
def small_photos():
    from optiforge.data.photos import photos

    return photos(views=12, seed=0)
