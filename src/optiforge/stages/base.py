"""The stage registry and what a stage receives and returns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from torch import nn

from optiforge.config import HardwareConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.parallel import SingleProcess, Strategy
from optiforge.registry import Registry
from optiforge.tasks import Task
from optiforge.training.finetune import Finetune, finetuner


@dataclass
class StageOutput:
    """What a stage hands back to the runner.

    ``artifact`` is the file the stage's model ships as (a packed or
    quantized file); when ``None`` the runner saves the state dict.
    ``info`` is merged into the stage's report row. ``exports`` maps an
    export format to a writer ``(path, example_input) -> path`` for this
    stage's model, used instead of the format's exporter (an int8 model
    whose ONNX graph is rebuilt from its float original). ``rows`` are
    report rows of other models the stage measured and kept (a search's
    front points); the runner puts them before the stage's own row.
    """

    model: nn.Module | Any
    artifact: Path | None = None
    info: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    exports: dict[str, Callable[[Path, Any], Path]] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)


@dataclass
class StageContext:
    """Everything a stage may use besides the model and its own config."""

    data: TaskData
    task: Task
    hardware: HardwareConfig
    train_config: TrainConfig
    stage_dir: Path
    run_dir: Path
    resume: bool = False
    progress: bool = True
    strategy: Strategy = field(default_factory=SingleProcess)
    previous: list[dict] = field(default_factory=list)  # report rows of earlier stages
    # inside a search: the key of the steps that made the incoming model, and work shared between steps
    input_key: str | None = None
    shared: dict = field(default_factory=dict)

    def shared_work(self, kind: str, config: BaseModel, ignore: dict) -> dict | None:
        """A dict for work that steps of one search share when they start from the same model with ``config``
        equal but for the fields in ``ignore`` (a pydantic ``exclude``); ``None`` outside a search."""
        if self.input_key is None:
            return None
        fields = config.model_dump(mode="json", exclude=ignore)
        text = json.dumps([self.input_key, kind, fields], sort_keys=True, default=str)
        return self.shared.setdefault(hashlib.sha256(text.encode()).hexdigest(), {})

    @property
    def finetuner(self) -> Finetune:
        """The fine-tune callable of this stage: the recipe's training settings, checkpoints in the stage folder."""
        return finetuner(
            self.data,
            self.train_config,
            hardware=self.hardware,
            checkpoint_root=self.stage_dir,
            resume=self.resume,
            progress=self.progress,
            strategy=self.strategy,
            task=self.task,
            label=self.stage_dir.name,
        )


StageCheck = Callable[[nn.Module, BaseModel, TaskData], nn.Module | None]


@dataclass(frozen=True)
class StageKind:
    """A stage kind. ``check(model, config, data)``, when given, runs before the run writes anything:
    it raises an :class:`~optiforge.errors.OptiforgeError` for what the stage would refuse later (a layer
    name the model lacks) and returns the model the next stage receives when the stage changes the
    architecture (a distilled student), else ``None``. It must not change ``model``."""

    name: str
    config: type[BaseModel]
    apply: Callable[[nn.Module, BaseModel, StageContext], StageOutput | nn.Module]
    description: str
    check: StageCheck | None = None


STAGES: Registry[StageKind] = Registry("stage kind")


def register_stage(name: str, config: type[BaseModel], description: str, check: StageCheck | None = None) -> Callable:
    """Decorator registering ``apply(model, config, ctx)`` as stage kind ``name``, with its pre-run ``check``."""

    def add(apply: Callable) -> Callable:
        STAGES.add(name, StageKind(name, config, apply, description, check))
        return apply

    return add
