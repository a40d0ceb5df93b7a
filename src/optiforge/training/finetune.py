"""The one fine-tune callable every stage that trains uses.

A verb that trains (pruning with fine-tuning, weight sharing, QAT,
distillation) takes ``finetune(model, config, callbacks=..., name=..., lr_scale=...)``
and never builds a training loop of its own; the recipe runner passes one
that checkpoints into the stage's folder and resumes there, and Python users
get one from :func:`finetuner` over their data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from torch import nn

from optiforge.config import FinetuneConfig, HardwareConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.parallel import SingleProcess, Strategy
from optiforge.tasks import Task
from optiforge.training.callbacks import Callback
from optiforge.training.loop import TrainResult, train


class Finetune(Protocol):
    def __call__(
        self,
        model: nn.Module,
        config: FinetuneConfig,
        callbacks: Sequence[Callback] = (),
        name: str = "finetune",
        lr_scale: float = 1.0,
    ) -> TrainResult:
        """Train ``model`` as ``config`` says; ``lr_scale`` scales the base rate when ``config.lr`` is unset."""


def finetuner(
    data: TaskData,
    base: TrainConfig | None = None,
    *,
    hardware: HardwareConfig | None = None,
    checkpoint_root: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    strategy: Strategy | None = None,
    task: Task | None = None,
    label: str = "",
) -> Finetune:
    """A :class:`Finetune` on ``data`` with ``base`` training settings.

    With ``checkpoint_root``, each run checkpoints into ``checkpoint_root/<name>``
    and, with ``resume``, continues from there.

    >>> import optiforge
    >>> from optiforge.config import FinetuneConfig
    >>> from optiforge.training.finetune import finetuner
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16]), data)
    >>> finetuner(data)(model, FinetuneConfig(epochs=1)).epochs_run
    1
    """
    base = base or TrainConfig()
    hardware = hardware or HardwareConfig()
    strategy = strategy or SingleProcess()

    def run(
        model: nn.Module,
        config: FinetuneConfig,
        callbacks: Sequence[Callback] = (),
        name: str = "finetune",
        lr_scale: float = 1.0,
    ) -> TrainResult:
        default_lr = None if lr_scale == 1.0 or base.optimizer.lr == "auto" else base.optimizer.lr * lr_scale
        return train(
            model,
            data,
            config.train_config(base, default_lr=default_lr),
            hardware=hardware,
            callbacks=callbacks,
            checkpoint_dir=Path(checkpoint_root) / name if checkpoint_root is not None else None,
            resume=resume,
            progress=progress,
            strategy=strategy,
            task=task,
            description=f"{label}: {name}" if label else name,
        )

    return run
