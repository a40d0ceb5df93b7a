"""Which reduced precisions a device runs at speed (its matrix and vector units).

A CPU without bf16 units (AVX-512 BF16 or AMX) emulates bf16 arithmetic and
runs it several times slower than float32; so does fp16 without AVX-512 FP16
or AMX-FP16. Inference and training ask :func:`fast_dtypes` before choosing
a reduced precision by themselves; an explicit request is honoured (with a
warning that says what was measured).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# CPU flags (as /proc/cpuinfo spells them) of the units that run each precision natively
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
FP16_FLAGS = frozenset({"avx512_fp16", "amx_fp16"})
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where the file does not exist, e.g. macOS)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic units (AVX-512 BF16 or AMX-BF16)."""
    return bool(cpu_flags() & BF16_FLAGS)


def cpu_has_fp16() -> bool:
    """Whether this CPU has fp16 arithmetic units (AVX-512 FP16 or AMX-FP16)."""
    return bool(cpu_flags() & FP16_FLAGS)


def cpu_has_int8() -> bool:
    """Whether this CPU has int8 dot-product units (VNNI or AMX-INT8), which int8 kernels need to beat float32."""
    return bool(cpu_flags() & INT8_FLAGS)


def fast_dtypes(device: torch.device | str = "cpu") -> frozenset[str]:
    """The precisions ``device`` runs at least as fast as float32: a subset of ``{"fp32", "bf16", "fp16", "int8"}``.

    >>> "fp32" in fast_dtypes("cpu")
    True
    """
    device = torch.device(device)
    names = {"fp32"}
    if device.type == "cuda":
        names.add("fp16")
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            names.add("bf16")
    elif device.type == "mps":
        names.add("fp16")
    elif device.type == "cpu":
        if cpu_has_bf16():
            names.add("bf16")
        if cpu_has_fp16():
            names.add("fp16")
        if cpu_has_int8():
            names.add("int8")
    return frozenset(names)


def has_fast(precision: str, device: torch.device | str = "cpu") -> bool:
    """Whether ``precision`` (``fp32``, ``bf16``, ``fp16``, ``int8``) runs at speed on ``device``."""
    return precision in fast_dtypes(device)
