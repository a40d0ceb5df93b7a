"""What the loop decides for itself before training: ``batch_size: auto`` and ``lr: auto``.

The batch size is chosen first, so the range test runs at the size training
will use. The choices are saved in the checkpoint: a resumed run reuses them
instead of measuring again (a re-measured throughput could pick another size).
"""

from __future__ import annotations

from torch import nn

from optiforge.config import HardwareConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError
from optiforge.training.auto_batch import REFERENCE_BATCH, choose_batch_size, scaled_lr, scaling_rule
from optiforge.training.auto_lr import choose_lr


def resolve_choices(
    model: nn.Module,
    data: TaskData,
    config: TrainConfig,
    hardware: HardwareConfig,
    *,
    single_process: bool,
    saved: dict | None = None,
) -> tuple[TrainConfig, dict]:
    """``config`` with numbers in place of ``auto``, and what was chosen and why."""
    choices = dict(saved or {})
    if config.batch_size == "auto":
        if not single_process:
            raise ConfigError(
                "train.batch_size: 'auto' is measured in one process; give the global batch size as a number "
                "under a parallel strategy"
            )
        if "batch_size" not in choices:
            size, reason = choose_batch_size(model, data, config, hardware)
            choices.update(batch_size=size, batch_size_reason=reason)
            if config.optimizer.lr != "auto":
                rule = scaling_rule(config.optimizer.name)
                choices["lr"] = scaled_lr(config.optimizer.lr, size, config.optimizer.name)
                choices["lr_reason"] = (
                    f"{config.optimizer.lr:g} for batch {REFERENCE_BATCH} scaled to batch {size} by the {rule} rule"
                )
        config = config.model_copy(update={"batch_size": choices["batch_size"]})
    if config.optimizer.lr == "auto" and "lr" not in choices:
        lr, reason = choose_lr(model, data, config, hardware)
        choices.update(lr=lr, lr_reason=reason)
    if "lr" in choices:
        config = config.model_copy(update={"optimizer": config.optimizer.model_copy(update={"lr": choices["lr"]})})
    return config, choices
