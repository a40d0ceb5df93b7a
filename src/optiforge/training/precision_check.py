"""bf16 on a CPU without bf16 units is emulated and slower than fp32: say so, with figures.

Measured on a copy of the model over a few training steps of a real batch, so
the warning gives this model's slowdown on this machine, not a rule of thumb.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time

import torch
from torch import nn

from optiforge.data.builtin import TaskData
from optiforge.hardware import Precision
from optiforge.hardware.capabilities import cpu_has_bf16
from optiforge.tasks import Task

log = logging.getLogger("optiforge")

STEPS = 3
BATCH = 64


def _step_ms(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, task: Task, autocast) -> float:
    def step() -> None:
        with autocast():
            loss = task.loss(model(inputs).float(), targets)
        loss.backward()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    return (time.perf_counter() - started) / STEPS * 1e3


def warn_if_bf16_is_slow(model: nn.Module, data: TaskData, task: Task, precision: Precision) -> float | None:
    """The measured bf16/fp32 step-time ratio when bf16 runs on a CPU without the units, else ``None``."""
    if precision.name != "bf16" or precision.device.type != "cpu" or cpu_has_bf16():
        return None
    trial = copy.deepcopy(model).train()
    inputs = torch.stack([data.train[i][0] for i in range(min(BATCH, len(data.train)))])
    targets = torch.stack([torch.as_tensor(data.train[i][1]) for i in range(len(inputs))])
    fp32_ms = _step_ms(trial, inputs, targets, task, contextlib.nullcontext)
    bf16_ms = _step_ms(trial, inputs, targets, task, precision.autocast)
    ratio = bf16_ms / fp32_ms
    (log.warning if ratio > 1 else log.info)(
        "hardware.precision: bf16 on a CPU without bf16 units (no amx_bf16 or avx512_bf16 flag): a training step "
        "took %.2f ms against %.2f ms in fp32 (%.2f× the time); use precision: fp32 here",
        bf16_ms,
        fp32_ms,
        ratio,
    )
    return ratio
