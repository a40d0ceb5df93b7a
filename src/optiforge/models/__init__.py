"""Built-in models and the model registry."""

from optiforge.models.builtin import MODELS, build_model, count_parameters

__all__ = ["MODELS", "build_model", "count_parameters"]
