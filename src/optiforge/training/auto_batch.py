"""``batch_size: auto``: the batch that trains the most samples per second here.

Each candidate (powers of two from ``CANDIDATES``) trains a copy of the model
for a few timed steps, of which the fastest counts. The search keeps the
largest size that raised throughput by more than ``MIN_GAIN`` over the one
before and fits in memory. Sizes leaving fewer than ``MIN_STEPS_PER_EPOCH``
steps per epoch are not tried: past that point a larger batch buys
throughput with too few updates.

The learning rate, when given as a number, is taken as tuned for
``REFERENCE_BATCH`` and scaled to the chosen size: linearly for SGD (Goyal et
al. 2017, arXiv:1706.02677), by the square root for adaptive optimizers such
as Adam, whose updates are normalised by the gradient's scale (Malladi et al.
2022, arXiv:2205.10287). With ``lr: auto`` the range test runs at the chosen
size and nothing is scaled.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from optiforge.config import HardwareConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.data.loaders import make_loader
from optiforge.hardware import Precision, resolve_device
from optiforge.tasks import task_for
from optiforge.training.optimizers import build_optimizer

CANDIDATES = (32, 64, 128, 256, 512, 1024)
MIN_GAIN = 0.10
MIN_STEPS_PER_EPOCH = 8
TIMED_STEPS = 3
REFERENCE_BATCH = 64
_LINEAR_RULE = {"sgd", "gd"}


def scaling_rule(optimizer_name: str) -> str:
    return "linear" if optimizer_name.lower() in _LINEAR_RULE else "sqrt"


def scaled_lr(lr: float, batch_size: int, optimizer_name: str) -> float:
    ratio = batch_size / REFERENCE_BATCH
    return lr * (ratio if scaling_rule(optimizer_name) == "linear" else math.sqrt(ratio))


def _samples_per_second(
    model: nn.Module, data: TaskData, config: TrainConfig, hardware: HardwareConfig, batch_size: int
) -> float | None:
    """Throughput of a few training steps on a copy; ``None`` when the batch does not fit in memory."""
    device = resolve_device(hardware.device)
    precision = Precision(hardware.precision, device)
    task = task_for(data.task)
    trial = copy.deepcopy(model).to(device).train()
    optimizer = build_optimizer(trial, config.optimizer.model_copy(update={"lr": 1e-6}))
    inputs, targets = next(iter(make_loader(data.train, batch_size, shuffle=True, seed=config.seed)))
    inputs, targets = inputs.to(device), targets.to(device)

    def step() -> None:
        with precision.autocast():
            loss = task.loss(trial(inputs).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed_step() -> float:
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    try:
        timed_step()  # warm-up: allocations and kernel selection
        # the fastest step: another process taking the CPU for a moment only slows the others
        seconds = min(timed_step() for _ in range(TIMED_STEPS))
    except RuntimeError as error:  # CUDA's OutOfMemoryError is one; the CPU allocator raises a plain one
        if "memory" in str(error).lower():
            return None
        raise
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return batch_size / seconds


def choose_batch_size(
    model: nn.Module, data: TaskData, config: TrainConfig, hardware: HardwareConfig
) -> tuple[int, str]:
    """The chosen size and a sentence with the measured throughputs."""
    largest = max(CANDIDATES[0], len(data.train) // MIN_STEPS_PER_EPOCH)
    measured: list[tuple[int, float]] = []
    chosen, best = CANDIDATES[0], 0.0
    stopped = f"no larger size leaves {MIN_STEPS_PER_EPOCH} steps per epoch"
    for size in (size for size in CANDIDATES if size <= largest):
        throughput = _samples_per_second(model, data, config, hardware, size)
        if throughput is None:
            stopped = f"{size} does not fit in memory"
            break
        measured.append((size, throughput))
        if throughput <= best * (1 + MIN_GAIN):
            stopped = f"{size} gained less than {MIN_GAIN:.0%}"
            break
        chosen, best = size, throughput
    figures = ", ".join(f"{size}: {value:,.0f}" for size, value in measured)
    return chosen, f"samples/s by batch ({figures}); stopped as {stopped}"
