"""fp16/bf16 casts only where the CPU has the units.

Without AVX-512 BF16/FP16 or AMX, PyTorch emulates half-precision arithmetic
and a cast model runs several times slower than float32. ``engine: auto``
then refuses the cast (it never picks a slower form by itself); a cast asked
for by name is made, with a warning that gives the slowdown measured on the
model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optiforge.bench.deployment import slowdown, warn_emulated
from optiforge.errors import ConfigError
from optiforge.hardware.capabilities import has_fast
from optiforge.quantization.config import QuantConfig


def check_cast(model: nn.Module, cast: nn.Module, example: Any, config: QuantConfig) -> None:
    """Refuse (``engine: auto``) or warn (an engine named) when this CPU would emulate ``config.scheme``."""
    cpu = torch.device("cpu")
    if has_fast(config.scheme, cpu):
        return
    if config.engine == "auto":
        measured = (
            f"measured {slowdown(model, cast, example):.1f}x slower than fp32 on this model"
            if example is not None
            else ""
        )
        raise ConfigError(
            f"quantize.scheme: '{config.scheme}' with engine: auto, but this CPU has no {config.scheme} units"
            + (f" ({measured})" if measured else "")
            + "; name engine: torch to cast anyway, or choose an int8 scheme"
        )
    if example is not None:
        warn_emulated(config.scheme, cpu, model, cast, example)
