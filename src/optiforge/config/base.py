"""The bases of every config: frozen, unknown fields refused, errors raised as optiforge's own."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError  # noqa: F401 (Field: doctest)

from optiforge.config.messages import describe_validation_error
from optiforge.errors import ConfigError


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

    >>> class Example(Config):
    ...     epochs: int = Field(10, ge=0)
    >>> Example(epochs=-1)
    Traceback (most recent call last):
    optiforge.errors.ConfigError: Example.epochs: Input should be greater than or equal to 0 (got -1)
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
