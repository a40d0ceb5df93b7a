"""Data-source tests build Hugging Face models, which import torchvision: through the test-only operator stub."""

from __future__ import annotations

from vision_shim import stub_torchvision_operators

stub_torchvision_operators()
