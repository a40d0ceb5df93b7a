"""Shared fixtures: small data and models so tests stay fast."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch

# the test helpers (data factories used by subprocess tests) import as `factories`
sys.path.insert(0, str(Path(__file__).parent / "helpers"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The torchvision wheel on PyPI is a CUDA build: beside the CPU torch its operator registrations fail
# ("operator torchvision::nms does not exist"). Its model classes are pure Python and work without them,
# so the tests (never the library) stand an empty module in for torchvision/_meta_registrations.py.
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def one_thread():
    """Models this small train fastest on one thread; the caller's setting is given back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits():
    import optiforge

    return optiforge.build_data(optiforge.DataConfig(name="digits"))


@pytest.fixture
def small_mlp(digits):
    import optiforge

    torch.manual_seed(0)
    return optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), digits)
