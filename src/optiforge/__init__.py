"""optiforge: train deep-learning models faster and ship them smaller, on PyTorch.

Public verbs take an ``nn.Module`` and return one; configs are the same typed
objects a YAML recipe parses into.
"""

from optiforge.bench.measure import Measurement, measure
from optiforge.config import (
    DataConfig,
    EarlyStoppingConfig,
    HardwareConfig,
    MeasureConfig,
    ModelConfig,
    OptimizerConfig,
    ParallelConfig,
    ScheduleConfig,
    TrainConfig,
)
from optiforge.data import DATASETS, TaskData, build_data
from optiforge.errors import ConfigError, DataError, ModelError, OptiforgeError, RecipeError, TrainingError
from optiforge.exporters import export
from optiforge.models import MODELS, build_model
from optiforge.recipe import Recipe, load_recipe
from optiforge.runner import RunResult, run_recipe
from optiforge.stages import STAGES, register_stage
from optiforge.training import Callback, TrainResult, lr_find, train

__version__ = "0.1.0"

# Verbs of the technique packages, imported on first use so `import optiforge` stays light.
_LAZY = {
    "prune": "optiforge.compress",
    "PruneConfig": "optiforge.compress",
    "share": "optiforge.compress",
    "ShareConfig": "optiforge.compress",
    "factorize": "optiforge.compress",
    "FactorizeConfig": "optiforge.compress",
    "load_packed": "optiforge.compress",
    "quantize": "optiforge.quantization",
    "QuantConfig": "optiforge.quantization",
    "distill": "optiforge.distillation",
    "DistillConfig": "optiforge.distillation",
    "students": "optiforge.distillation",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optiforge' has no attribute '{name}'")


__all__ = [
    "DATASETS",
    "MODELS",
    "STAGES",
    "Callback",
    "ConfigError",
    "DataConfig",
    "DataError",
    "EarlyStoppingConfig",
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
    "build_data",
    "build_model",
    "export",
    "load_recipe",
    "lr_find",
    "measure",
    "register_stage",
    "run_recipe",
    "train",
]
