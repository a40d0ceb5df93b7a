"""One ``device: auto`` and the numerics around it.

Device, precision and compilation are three separate choices; technique code
never asks which one is in force.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings

import torch
from torch import nn

from optiforge.config import HardwareConfig
from optiforge.errors import ConfigError

log = logging.getLogger("optiforge")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _xla_device() -> torch.device | None:
    if importlib.util.find_spec("torch_xla") is None:
        return None
    import torch_xla.core.xla_model as xm  # pragma: no cover - needs an XLA host

    return xm.xla_device()  # pragma: no cover


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then XLA/TPU (when torch_xla is installed), then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        xla = _xla_device()
        if xla is not None:  # pragma: no cover - needs an XLA host
            return xla
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("hardware.device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("hardware.device: 'mps' was asked for but Apple MPS is not available; use 'auto' or 'cpu'")
    if name == "xla":
        xla = _xla_device()
        if xla is None:
            raise ConfigError("hardware.device: 'xla' needs the torch_xla package; use 'auto' or 'cpu'")
        return xla  # pragma: no cover
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


class Precision:
    """Autocast and (for fp16) a gradient scaler for one device.

    fp16 needs loss scaling because small gradients underflow in half
    precision; bf16 has fp32's exponent range and does not.
    """

    def __init__(self, precision: str, device: torch.device) -> None:
        self.name = precision
        self.device = device
        self.dtype = _DTYPES.get(precision)
        if precision == "fp16" and device.type == "cpu":
            log.warning("fp16 autocast on CPU is slow and poorly supported; bf16 is the CPU's half precision")
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)


def compile_model(model: nn.Module, hardware: HardwareConfig, example: torch.Tensor | None = None) -> nn.Module:
    """``torch.compile`` when asked; on failure keep the eager model and say why."""
    if hardware.channels_last and example is not None and example.dim() == 4:
        model = model.to(memory_format=torch.channels_last)
    if not hardware.compile:
        return model
    try:
        compiled = torch.compile(model)
        if example is not None:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                was_training = model.training
                model.eval()
                compiled(example)
                model.train(was_training)
        return compiled
    except Exception as error:  # compile backends fail in many ways; eager always works
        log.warning("torch.compile failed (%s: %s); running eagerly", type(error).__name__, str(error).splitlines()[0])
        return model
