"""Typed configs for every part of a run.

The YAML recipe parses into exactly these objects, so Python users and recipe
users share one schema. Every config is frozen and refuses unknown fields; the
recipe loader turns validation errors into one-line messages that name the
field, the value and what is allowed (:mod:`optiforge.config.messages`).

Each section has its module: ``sources`` (data, model), ``hardware`` (device,
numerics, measuring), ``optimizer`` (optimizer, schedule), ``train`` (a run and
the fine-tuning inside a stage), ``parallel`` (strategies). Technique configs
live with their technique (``optiforge.compress``, ``optiforge.quantization``, ...).
"""

from optiforge.config.base import Config, OpenConfig
from optiforge.config.hardware import HardwareConfig, MeasureConfig
from optiforge.config.messages import describe_validation_error
from optiforge.config.optimizer import OptimizerConfig, ScheduleConfig, WeightAverageConfig
from optiforge.config.parallel import (
    DataParallelConfig,
    HybridConfig,
    ParallelConfig,
    PipelineConfig,
    ShardingConfig,
    TensorParallelConfig,
)
from optiforge.config.sources import DataConfig, ModelConfig
from optiforge.config.train import (
    EarlyStoppingConfig,
    FinetuneConfig,
    GradientConfig,
    TrainConfig,
    ValidationConfig,
)

__all__ = [
    "Config",
    "DataConfig",
    "DataParallelConfig",
    "EarlyStoppingConfig",
    "FinetuneConfig",
    "GradientConfig",
    "HardwareConfig",
    "HybridConfig",
    "MeasureConfig",
    "ModelConfig",
    "OpenConfig",
    "OptimizerConfig",
    "ParallelConfig",
    "PipelineConfig",
    "ScheduleConfig",
    "ShardingConfig",
    "TensorParallelConfig",
    "TrainConfig",
    "ValidationConfig",
    "WeightAverageConfig",
    "describe_validation_error",
]
