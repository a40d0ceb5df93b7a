"""Built-in models and the model registry."""

from optiforge.models import efficientnet as _efficientnet  # noqa: F401  registers efficientnet_lite0
from optiforge.models.builtin import MODELS, build_model, count_parameters

__all__ = ["MODELS", "build_model", "count_parameters"]
