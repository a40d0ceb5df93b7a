"""The torchvision wheel here is a CUDA build beside a CPU torch: its operator registrations fail on import.

The model definitions are pure Python, so the tests replace the one module that registers operators
with an empty one before torchvision (or timm, onnx2torch and transformers, which import it) loads.
The library never does this: it reports the failed import as a DependencyError.
"""

from __future__ import annotations

import importlib
import sys
import types


def stub_torchvision_operators() -> bool:
    """True when torchvision imports (after the stub where it is needed)."""
    if "torchvision" in sys.modules:
        return True
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001  no torchvision at all: the tests that need it skip
        return False
    return True
