"""Typed configs for every part of a run.

The YAML recipe parses into exactly these objects, so Python users and recipe
users share one schema. Every config is frozen and refuses unknown fields; the
recipe loader turns validation errors into one-line messages that name the
field, the value and what is allowed.
"""

from __future__ import annotations

import math
import operator
import typing
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from optiforge.errors import ConfigError
from optiforge.registry import closest


class _Validated:
    """Built from Python, a config that does not validate raises optiforge's :class:`ConfigError`.

    (Recipes validate through ``model_validate``, which names the field's path in the recipe.)
    """

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigError(describe_validation_error(error, type(self), type(self).__name__)) from None

    # Validation of nested configs (a recipe) must not go through this __init__: its errors name the
    # recipe's field path instead. Pydantic 2 calls an overridden __init__ for nested models unless
    # the function says it is the base one.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


class Config(_Validated, BaseModel):
    """Base of all configs: frozen, unknown fields refused, no infinite or NaN numbers.

    >>> TrainConfig(epochs=-1)
    Traceback (most recent call last):
    optiforge.errors.ConfigError: TrainConfig.epochs: Input should be greater than or equal to 0 (got -1)
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)
    # old field name → its new dotted path, so a recipe written for an earlier version is told what to write
    renamed_fields: ClassVar[dict[str, str]] = {}


class OpenConfig(_Validated, BaseModel):
    """A config whose extra fields are keyword arguments of a builder.

    The extras are checked against the builder's signature when it is built,
    so misspelt keyword arguments are still refused by name.
    """

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=(), allow_inf_nan=False)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(OpenConfig):
    """Where the data comes from. Extra fields go to the dataset builder."""

    name: str | None = "digits"
    factory: str | None = Field(None, description="'package.module:function' returning datasets")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    workers: int = Field(0, ge=0, le=256)
    seed: int = 0
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="classification: share of each training target spread over all classes"
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.factory is not None and self.name not in (None, "digits"):
            raise ValueError("give either 'name' or 'factory', not both")
        return self


class ModelConfig(OpenConfig):
    """Which model to build: exactly one source field. Extra fields go to the model's builder.

    ``name`` (a registered builder), ``factory`` (``package.module:function``), ``torchvision`` or ``timm``
    (an architecture by name, random weights), ``huggingface`` (a local folder or a package holding one),
    ``onnx`` (an ``.onnx`` file) or ``exported`` (a ``torch.export`` ``.pt2`` file).

    >>> ModelConfig(torchvision="resnet18").source
    ('torchvision', 'resnet18')
    >>> ModelConfig(name="mlp", onnx="model.onnx")
    Traceback (most recent call last):
    optiforge.errors.ConfigError: ModelConfig: give one model source, not 2: name='mlp', onnx='model.onnx'
    """

    sources: ClassVar[tuple[str, ...]] = ("name", "factory", "torchvision", "timm", "huggingface", "onnx", "exported")

    name: str | None = "mlp"
    factory: str | None = Field(None, description="'package.module:function' returning an nn.Module")
    torchvision: str | None = Field(None, description="a torchvision.models architecture, e.g. resnet18")
    timm: str | None = Field(None, description="a timm architecture, e.g. convnext_atto")
    huggingface: str | None = Field(None, description="a local Hugging Face model folder, or a package holding one")
    task: Literal["sequence_classification", "token_classification", "embedding", "causal_lm"] | None = Field(
        None, description="huggingface: what the model returns (default: sequence_classification)"
    )
    onnx: str | None = Field(None, description="an .onnx file, converted to PyTorch")
    exported: str | None = Field(None, description="a torch.export program (.pt2)")
    weights: str | None = Field(None, description="torchvision: a local state-dict file (never downloaded)")
    checkpoint: str | None = Field(None, description="state dict to load into the built model")

    @model_validator(mode="before")
    @classmethod
    def _name_yields(cls, data: Any) -> Any:
        # ``name`` has a default; another source given without ``name`` replaces it
        if isinstance(data, dict) and "name" not in data:
            if any(data.get(source) is not None for source in cls.sources if source != "name"):
                data = {**data, "name": None}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        given = [(source, getattr(self, source)) for source in self.sources if getattr(self, source) is not None]
        if len(given) != 1:
            listed = ", ".join(f"{source}={value!r}" for source, value in given) or "none given"
            raise ValueError(
                f"give one model source, not {len(given)}: {listed}"
                if given
                else f"give one model source ({', '.join(self.sources)}); none given"
            )
        if self.task is not None and self.huggingface is None:
            raise ValueError(f"'task' is for huggingface models, not {given[0][0]}={given[0][1]!r}")
        if self.weights is not None and self.torchvision is None:
            raise ValueError(
                f"'weights' is for torchvision models, not {given[0][0]}={given[0][1]!r}; use 'checkpoint'"
            )
        return self

    @property
    def source(self) -> tuple[str, str]:
        """``(field, value)`` of the one source this config names."""
        return next((source, getattr(self, source)) for source in self.sources if getattr(self, source) is not None)


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


class WeightAverageConfig(Config):
    """An exponential moving average of the weights: what validation scores and training returns."""

    decay: float = Field(
        0.99, gt=0.0, lt=1.0, description="share of the average kept at each optimizer step (0.99: about 100 steps)"
    )


class OptimizerConfig(Config):
    """An optimizer from torch.optim by name (``gd`` and ``sgd`` are SGD)."""

    name: str = "sgd"
    lr: float | Literal["auto"] = Field(0.1, description="a rate > 0, or 'auto': the range test's suggestion")
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="other keyword arguments")
    weight_average: WeightAverageConfig | None = Field(
        None, description="validate, stop on and return an exponential moving average of the weights"
    )

    @field_validator("lr", mode="before")
    @classmethod
    def _rate_or_auto(cls, value: Any) -> Any:
        if value == "auto":
            return value
        try:
            rate = float(value)
        except (TypeError, ValueError):
            raise ValueError("Input should be a number > 0 or 'auto'") from None
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("Input should be a finite number > 0 or 'auto'")
        return rate

    @field_validator("betas")
    @classmethod
    def _betas_are_fractions(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError("each beta must be in [0, 1)")
        return value


class ScheduleConfig(Config):
    """A learning-rate schedule with optional linear warm-up."""

    name: Literal["constant", "step", "multistep", "exponential", "cosine", "onecycle", "plateau"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)
    step_epochs: int = Field(10, ge=1, description="step: epochs between decays")
    milestones: list[int] = Field(default_factory=list, description="multistep: epochs")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor")
    min_lr: float = Field(0.0, ge=0.0)
    patience: int = Field(3, ge=0, description="plateau: epochs without improvement")


class EarlyStoppingConfig(Config):
    """Stop when the validation metric has not improved for ``patience`` epochs."""

    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0.0)


class GradientConfig(Config):
    """What happens to gradients between backward and the optimizer step."""

    clip_norm: float | None = Field(None, gt=0.0, description="clip the global gradient norm to this")
    accumulation_steps: int = Field(1, ge=1, description="backward passes summed into one optimizer step")


class ValidationConfig(Config):
    """When the validation split is scored, and whether a stalled score ends training."""

    every_epochs: int = Field(1, ge=1, description="epochs between validation passes (the last epoch always has one)")
    early_stopping: EarlyStoppingConfig | None = None


class TrainConfig(Config):
    """One training run. ``lr`` at this level is a shorthand for ``optimizer.lr``."""

    renamed_fields: ClassVar[dict[str, str]] = {
        "grad_clip_norm": "gradients.clip_norm",
        "accumulation_steps": "gradients.accumulation_steps",
        "eval_every": "validation.every_epochs",
        "early_stopping": "validation.early_stopping",
        "data_on_device": "../hardware.data_on_device",
    }

    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    epochs: int = Field(10, ge=0)
    batch_size: int | Literal["auto"] = Field(64, description="samples per step, or 'auto': chosen by throughput")
    gradients: GradientConfig = GradientConfig()
    validation: ValidationConfig = ValidationConfig()
    stop_at: dict[str, float] | None = Field(
        None, description="stop after the first epoch whose validation metric reaches this, e.g. {accuracy: 0.96}"
    )
    seed: int = 0

    @field_validator("batch_size", mode="before")
    @classmethod
    def _size_or_auto(cls, value: Any) -> Any:
        if value == "auto":
            return value
        try:
            size = operator.index(value)  # ints, NumPy ints; not 1.5 or '64'
        except TypeError:
            raise ValueError("Input should be an integer >= 1 or 'auto'") from None
        if isinstance(value, bool) or size < 1:
            raise ValueError("Input should be an integer >= 1 or 'auto'")
        return size

    @field_validator("stop_at")
    @classmethod
    def _one_target(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return value
        if len(value) != 1:
            raise ValueError("give one metric and its target, e.g. {accuracy: 0.96}")
        ((name, target),) = value.items()
        if not math.isfinite(target):
            raise ValueError(f"the target for '{name}' must be a finite number")
        return value

    @model_validator(mode="before")
    @classmethod
    def _lr_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lr" in data:
            data = dict(data)
            optimizer = data.get("optimizer") or {}
            if isinstance(optimizer, BaseModel):
                optimizer = optimizer.model_dump()
            if not isinstance(optimizer, dict):
                return data  # the optimizer field's own validation names the problem
            optimizer = dict(optimizer)
            optimizer["lr"] = data.pop("lr")
            data["optimizer"] = optimizer
        return data


class DataParallelConfig(Config):
    """``ddp``: options passed to ``DistributedDataParallel``."""

    bucket_cap_mb: float = Field(25.0, gt=0.0, description="gradients all-reduced together, in MiB (DDP's default)")
    gradient_as_bucket_view: bool = Field(True, description="gradients are views into the buckets: one copy fewer")
    static_graph: bool = Field(False, description="the same parameters are used at every step (DDP may cache)")


class ShardingConfig(Config):
    """``fsdp`` and ``hybrid`` with ``inner: shard``."""

    cpu_offload: bool = Field(False, description="shards and optimizer state in host memory")


class PipelineConfig(Config):
    """``pipeline`` and ``hybrid`` with ``inner: pipeline``."""

    microbatches: int = Field(4, ge=1, description="slices of each batch")
    schedule: Literal["gpipe", "1f1b"] = "gpipe"
    split_points: list[str] = Field(default_factory=list, description="top-level module names where stages begin")


class TensorParallelConfig(Config):
    """``tensor`` and ``hybrid`` with ``inner: tensor``."""

    plan: dict[str, Literal["colwise", "rowwise"]] = Field(
        default_factory=dict, description="Linear module name -> split (default: every Linear pair)"
    )


class HybridConfig(Config):
    """``hybrid``: a 2-D mesh of data-parallel rows times an inner strategy."""

    mesh: list[int] = Field(default_factory=list, description="mesh shape, e.g. [2, 2]")
    inner: Literal["shard", "tensor", "pipeline"] = Field("shard", description="what the mesh's second dimension does")


class ParallelConfig(Config):
    """How work is spread over processes; ``none`` is one process.

    Each strategy's options sit under its own name; ``hybrid`` also reads the options of its inner strategy.
    """

    renamed_fields: ClassVar[dict[str, str]] = {
        "microbatches": "pipeline.microbatches",
        "schedule": "pipeline.schedule",
        "split_points": "pipeline.split_points",
        "plan": "tensor.plan",
        "mesh": "hybrid.mesh",
        "inner": "hybrid.inner",
        "cpu_offload": "fsdp.cpu_offload",
    }

    strategy: Literal["none", "ddp", "fsdp", "pipeline", "tensor", "hybrid"] = "none"
    ddp: DataParallelConfig = DataParallelConfig()
    fsdp: ShardingConfig = ShardingConfig()
    pipeline: PipelineConfig = PipelineConfig()
    tensor: TensorParallelConfig = TensorParallelConfig()
    hybrid: HybridConfig = HybridConfig()
    max_restarts: int = Field(0, ge=0)
    port: int | None = Field(None, ge=1, le=65535, description="--nproc: rendezvous port (default: a free one)")


class MeasureConfig(Config):
    """How each stage is measured."""

    latency_repeats: int = Field(50, ge=1, le=100_000)
    warmup: int = Field(5, ge=0, le=10_000)
    throughput_batch: int = Field(256, ge=1, le=65_536)
    throughput_repeats: int = Field(5, ge=1, le=10_000)


class FinetuneConfig(Config):
    """Training inside a stage (fine-tuning, QAT, distillation): unset fields take the recipe's ``train:``.

    One shape for every stage that trains: ``finetune: {epochs: 5, lr: 0.01}``.

    >>> FinetuneConfig(epochs=3, lr=0.01).train_config(TrainConfig(epochs=30)).optimizer.lr
    0.01
    """

    epochs: int = Field(0, ge=0)
    lr: float | None = Field(None, gt=0.0, description="learning rate (default: the recipe's, or the stage's rule)")
    optimizer: OptimizerConfig | None = None
    schedule: ScheduleConfig | None = None
    batch_size: int | None = Field(None, ge=1)

    def train_config(self, base: TrainConfig, default_lr: float | None = None) -> TrainConfig:
        """``base`` with this config's fields put in; ``default_lr`` applies when ``lr`` is unset."""
        optimizer = self.optimizer or base.optimizer
        lr = self.lr if self.lr is not None else default_lr
        if lr is not None:
            optimizer = optimizer.model_copy(update={"lr": lr})
        update: dict[str, Any] = {"epochs": self.epochs, "optimizer": optimizer}
        if self.schedule is not None:
            update["schedule"] = self.schedule
        if self.batch_size is not None:
            update["batch_size"] = self.batch_size
        return base.model_copy(update=update)


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_class(argument)
        if found is not None:
            return found
    return None


def _class_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    cls: type[BaseModel] | None = root
    for part in loc:
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            continue
        cls = _model_class(cls.model_fields[part].annotation)
    return cls


def _fields_at(root: type[BaseModel], loc: tuple) -> list[str]:
    cls = _class_at(root, loc)
    return sorted(cls.model_fields) if cls is not None else []


def _path(prefix: str, loc: tuple) -> str:
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union")):
            text += f".{part}" if text else str(part)
    return text


def _renamed_path(prefix: str, parent: tuple, renamed: str) -> str:
    """Where a renamed field lives now; each leading ``../`` climbs out of one section (a move to a sibling)."""
    while renamed.startswith("../"):
        renamed = renamed.removeprefix("../")
        if not parent:  # built from Python: the new section's name is the whole answer
            return renamed
        parent = parent[:-1]
    return _path(prefix, parent + (renamed,))


def describe_validation_error(error: ValidationError, root: type[BaseModel], prefix: str = "") -> str:
    """One line per problem: the field path, what was wrong, what is allowed."""
    lines = []
    for problem in error.errors():
        loc = tuple(problem["loc"])
        path = _path(prefix, loc)
        renamed = getattr(_class_at(root, loc[:-1]), "renamed_fields", {}).get(str(loc[-1])) if loc else None
        if not loc:  # a check over the whole config: its message names the fields
            lines.append(f"{path or 'recipe'}: {problem['msg'].removeprefix('Value error, ')}")
        elif problem["type"] == "extra_forbidden" and renamed:
            lines.append(f"field '{path}' is now '{_renamed_path(prefix, loc[:-1], renamed)}'")
        elif problem["type"] == "extra_forbidden":
            allowed = _fields_at(root, loc[:-1])
            lines.append(f"unknown field '{path}'{closest(str(loc[-1]), allowed)}; allowed: {', '.join(allowed)}")
        elif problem["type"] == "missing":
            lines.append(f"missing field '{path}'")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{path or 'recipe'}: {message} (got {problem.get('input')!r:.100})")
    return "; ".join(lines)
