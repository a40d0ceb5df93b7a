"""optiforge: train deep-learning models faster and ship them smaller, on PyTorch.

Public verbs take an ``nn.Module`` and return one; configs are the same typed
objects a YAML recipe parses into.
"""

from optiforge.bench.measure import Measurement, measure
from optiforge.compress import FactorizeConfig, PruneConfig, ShareConfig, factorize, load_packed, prune, share
from optiforge.config import (
    DataConfig,
    DataParallelConfig,
    EarlyStoppingConfig,
    GradientConfig,
    HardwareConfig,
    MeasureConfig,
    ModelConfig,
    OptimizerConfig,
    ParallelConfig,
    ScheduleConfig,
    TrainConfig,
    ValidationConfig,
)
from optiforge.data import DATASETS, TaskData, build_data
from optiforge.distillation import DistillConfig, distill, students
from optiforge.errors import ConfigError, DataError, ModelError, OptiforgeError, RecipeError, TrainingError
from optiforge.exporters import export
from optiforge.models import MODELS, build_model
from optiforge.quantization import QuantConfig, quantize
from optiforge.recipe import Recipe, load_recipe
from optiforge.runner import RunResult, run_recipe
from optiforge.stages import STAGES, register_stage
from optiforge.stages.search import optimize
from optiforge.training import Callback, TrainResult, lr_find, train
from optiforge.version import __version__

__all__ = [
    "DistillConfig",
    "FactorizeConfig",
    "PruneConfig",
    "QuantConfig",
    "ShareConfig",
    "__version__",
    "distill",
    "factorize",
    "load_packed",
    "prune",
    "quantize",
    "share",
    "students",
    "DATASETS",
    "MODELS",
    "STAGES",
    "Callback",
    "ConfigError",
    "DataConfig",
    "DataError",
    "DataParallelConfig",
    "EarlyStoppingConfig",
    "GradientConfig",
    "HardwareConfig",
    "MeasureConfig",
    "Measurement",
    "ModelConfig",
    "ModelError",
    "OptimizerConfig",
    "OptiforgeError",
    "ParallelConfig",
    "Recipe",
    "RecipeError",
    "RunResult",
    "ScheduleConfig",
    "TaskData",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "ValidationConfig",
    "build_data",
    "build_model",
    "export",
    "load_recipe",
    "lr_find",
    "measure",
    "optimize",
    "register_stage",
    "run_recipe",
    "train",
]
