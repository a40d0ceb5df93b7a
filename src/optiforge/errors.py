"""The exception family for user mistakes.

Anything a user can get wrong (a recipe field, a data factory, a layer the
technique cannot handle) raises a subclass of :class:`OptiforgeError`; the CLI
prints its message on one line and exits with status 2. Bugs may raise anything.
"""

from __future__ import annotations


class OptiforgeError(Exception):
    """Base class of every error caused by user input."""


class ConfigError(OptiforgeError):
    """A config value is missing, misspelt, of the wrong type or out of range."""


class RecipeError(ConfigError):
    """A recipe file cannot be read or does not fit the schema."""


class DataError(OptiforgeError):
    """A dataset cannot be built, or its shapes do not fit the model."""


class ModelError(OptiforgeError):
    """A model cannot be built, or a layer is not supported by a technique."""


class TrainingError(OptiforgeError):
    """Training cannot go on (non-finite loss, unusable checkpoint)."""


class DependencyError(OptiforgeError):
    """An optional package a feature needs is not installed."""
