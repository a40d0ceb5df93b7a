"""Shared fixtures: small data and models so tests stay fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# the test helpers (data factories used by subprocess tests) import as `factories`
sys.path.insert(0, str(Path(__file__).parent / "helpers"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
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
