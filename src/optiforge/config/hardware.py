"""The machine a run uses, and how each stage is measured on it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optiforge.config.base import Config


class HardwareConfig(Config):
    """Device, numerics and compilation: three separate choices."""

    device: Literal["auto", "cpu", "cuda", "mps", "xla"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    threads: int | None = Field(None, ge=1, le=4096)
    channels_last: bool = False
    data_on_device: bool = Field(
        True, description="keep a tensor dataset whole on the device and slice batches from it (no DataLoader)"
    )


class MeasureConfig(Config):
    """How each stage is measured."""

    latency_repeats: int = Field(50, ge=1, le=100_000)
    warmup: int = Field(5, ge=0, le=10_000)
    throughput_batch: int = Field(256, ge=1, le=65_536)
    throughput_repeats: int = Field(5, ge=1, le=10_000)
