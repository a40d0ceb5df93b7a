"""The learning-rate range test (Smith 2017, arXiv:1506.01186).

The rate grows exponentially from ``start_lr`` to ``end_lr`` over ``steps``
mini-batches while the smoothed loss is recorded, until the loss diverges
(1.5 times its lowest value). The suggestion is the rate at the lowest
smoothed loss divided by ten, fast.ai's ``minimum`` suggestion: the lowest
point is a broad, stable feature of the curve, where the steepest slope is
the difference of two noisy points and moved tenfold from seed to seed on a
wider cnn1d (1.2e-4 to 1.2e-3, where the lowest point stayed at 1.9e-2 to
2.5e-2). The model's weights are restored afterwards. The loss is the task's
own, without ``data.label_smoothing``: smoothing puts a floor under the loss
that flattens its fall and moves the suggestion to lower rates.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from optiforge.config import HardwareConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError
from optiforge.hardware import Precision, resolve_device
from optiforge.tasks import task_for
from optiforge.training.checkpoint import seed_everything
from optiforge.training.optimizers import build_optimizer
from optiforge.training.tensor_batches import make_batches

DIVERGED = 1.5  # the smoothed loss this many times its lowest value: the rate is past usable
BELOW_MINIMUM = 10.0  # the suggestion: the rate at the lowest loss divided by this


@dataclass
class LRFindResult:
    learning_rates: list[float]
    losses: list[float]
    suggested_lr: float
    plot: Path | None = None


def lr_find(
    model: nn.Module,
    data: TaskData,
    config: TrainConfig = TrainConfig(),
    *,
    hardware: HardwareConfig = HardwareConfig(),
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    steps: int = 100,
    plot: str | Path | None = None,
) -> LRFindResult:
    """Run the range test and suggest a learning rate.

    >>> import optiforge
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), data)
    >>> found = optiforge.lr_find(model, data, steps=30)
    >>> 1e-5 <= found.suggested_lr <= 10
    True
    """
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find: need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if steps < 5:
        raise ConfigError(f"lr-find: steps must be at least 5, got {steps}")
    if config.batch_size == "auto":
        raise ConfigError("lr-find: train.batch_size is 'auto'; give the size to test at, e.g. train.batch_size=128")
    seed_everything(config.seed)
    device = resolve_device(hardware.device)
    precision = Precision(hardware.precision, device)
    task = task_for(data.task)
    saved = copy.deepcopy(model.state_dict())
    model.to(device).train()
    optimizer = build_optimizer(model, config.optimizer.model_copy(update={"lr": start_lr}))
    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    loader = make_batches(
        data.train, config.batch_size, device, on_device=hardware.data_on_device, shuffle=True, seed=config.seed
    )
    rates, losses = [], []
    smoothed, best = None, math.inf
    step = 0
    while step < steps:
        for inputs, targets in loader:
            lr = start_lr * factor**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            with precision.autocast():
                loss = task.loss(model(inputs.to(device)).float(), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = loss.item()
            smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
            rates.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            step += 1
            # a diverging loss says nothing more; stopping early saves about a fifth of the steps
            if step >= steps or not math.isfinite(smoothed) or smoothed > DIVERGED * best:
                step = steps
                break
    model.load_state_dict(saved)
    suggested = suggest_lr(rates, losses)
    plot_path = None
    if plot is not None:
        from optiforge.bench.plots import plot_series

        plot_path = plot_series(
            {"smoothed loss": (rates, losses)},
            Path(plot),
            "learning rate",
            "loss",
            "learning-rate range test",
            xscale="log",
            marker=suggested,
        )
    return LRFindResult(rates, losses, suggested, plot_path)


def suggest_lr(rates: list[float], losses: list[float]) -> float:
    """The rate at the lowest finite smoothed loss, divided by ten (never below the first rate)."""
    finite = [(loss, rate) for rate, loss in zip(rates, losses, strict=True) if math.isfinite(loss)]
    if not finite:
        return rates[0]
    _, lowest_at = min(finite)
    return max(rates[0], lowest_at / BELOW_MINIMUM)
