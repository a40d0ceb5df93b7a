"""Typed configs of the compression verbs; recipe stages parse into the same objects."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from optiforge.config import Config


def _check_fraction(value: float, name: str, show: bool = False) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1)" + (f", got {value}" if show else ""))
    return value


class LayerSelection(Config):
    """Which layers a technique touches.

    ``exclude`` holds module names (``named_modules`` paths; shell-style
    patterns such as ``"encoder.*.attention"`` are allowed); ``exclude_types``
    holds class names such as ``Conv1d``. A name that matches no layer is an
    error, so a typo never silently prunes everything.
    """

    exclude: list[str] = Field(default_factory=list)
    exclude_types: list[str] = Field(default_factory=list)
    keep_first: bool = Field(False, description="leave the first prunable layer untouched")
    keep_last: bool = Field(False, description="leave the last prunable layer untouched")


class GradualConfig(Config):
    """The cubic schedule of Zhu & Gupta (2017), https://arxiv.org/abs/1710.01878.

    Sparsity rises from ``initial_sparsity`` to the target between the
    fractions ``start`` and ``end`` of the fine-tuning steps, with the mask
    recomputed ``updates`` times; the remaining steps fine-tune at the target.
    """

    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    start: float = Field(0.0, ge=0.0, lt=1.0)
    end: float = Field(0.75, gt=0.0, le=1.0)
    updates: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> GradualConfig:
        if self.end <= self.start:
            raise ValueError(f"gradual.end ({self.end}) must be after gradual.start ({self.start})")
        return self


class StructuredConfig(Config):
    """Options of ``method: structured`` (Torch-Pruning's dependency graph)."""

    importance: Literal["l1", "l2", "taylor"] = "l2"
    iterative_steps: int = Field(1, ge=1, description="prune in this many steps, fine-tuning between them")
    round_to: int | None = Field(None, ge=1, description="keep channel counts multiples of this")
    taylor_batches: int = Field(4, ge=1, description="batches whose gradients score channels for 'taylor'")
    prune_heads: bool = Field(False, description="transformer encoders: remove whole attention heads")
    head_sparsity: float | None = Field(None, description="share of heads removed (default: sparsity)")

    @field_validator("head_sparsity")
    @classmethod
    def _head_fraction(cls, value: float | None) -> float | None:
        return None if value is None else _check_fraction(value, "head_sparsity")


class PruneConfig(Config):
    """Magnitude pruning, unstructured (zeros) or structured (smaller layers).

    ``sparsity`` is the share of weights set to zero (``magnitude``) or of
    output channels/neurons removed (``structured``). ``layer_sparsity``
    gives per-layer values (a mapping, or the path of a ``sensitivity.json``
    written by ``optiforge sensitivity``); listed layers take their own value.

    >>> from optiforge.compress import PruneConfig
    >>> PruneConfig(sparsity=0.9, schedule="gradual", finetune_epochs=10).scope
    'global'
    """

    method: Literal["magnitude", "structured"] = "magnitude"
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    finetune_epochs: int = Field(0, ge=0)
    layers: LayerSelection = LayerSelection()
    layer_sparsity: dict[str, float] | str | None = None
    gradual: GradualConfig = GradualConfig()
    structured: StructuredConfig = StructuredConfig()

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, value: float) -> float:
        return _check_fraction(value, "sparsity")

    @field_validator("layer_sparsity")
    @classmethod
    def _layer_values(cls, value: dict[str, float] | str | None) -> dict[str, float] | str | None:
        if isinstance(value, dict):
            for name, fraction in value.items():
                _check_fraction(fraction, f"layer_sparsity['{name}']", show=True)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        if self.schedule == "gradual" and self.finetune_epochs < 1:
            raise ValueError("schedule 'gradual' prunes during fine-tuning: set finetune_epochs >= 1")
        if self.schedule == "gradual" and self.method == "structured":
            raise ValueError(
                "schedule 'gradual' is for method 'magnitude'; structured pruning uses structured.iterative_steps"
            )
        return self


class ShareConfig(Config):
    """Weight sharing: k-means clusters per layer, then fine-tuning of the shared values.

    >>> from optiforge.compress import ShareConfig
    >>> ShareConfig(clusters=16).init
    'linear'
    """

    clusters: int = Field(16, description="shared values per layer (k)")
    init: Literal["linear", "random", "density"] = "linear"
    include_bias: bool = Field(False, description="cluster biases too (each with its own k values)")
    finetune_epochs: int = Field(0, ge=0)
    layers: LayerSelection = LayerSelection()
    seed: int = 0

    @field_validator("clusters")
    @classmethod
    def _at_least_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError("clusters must be at least 2")
        if value > 65536:
            raise ValueError("clusters must be at most 65536")
        return value


class FactorizeConfig(Config):
    """Truncated SVD of Linear (and Conv, reshaped) layers.

    Give ``rank_ratio`` (share of the full rank kept) or ``energy`` (share of
    the squared singular values kept). A layer is replaced by two smaller
    ones only where that saves parameters.

    >>> from optiforge.compress import FactorizeConfig
    >>> FactorizeConfig(energy=0.9).rank_ratio is None
    True
    """

    rank_ratio: float | None = None
    energy: float | None = None
    finetune_epochs: int = Field(0, ge=0)
    layers: LayerSelection = LayerSelection(keep_last=True)

    @model_validator(mode="after")
    def _one_rule(self) -> FactorizeConfig:
        if (self.rank_ratio is None) == (self.energy is None):
            raise ValueError("give exactly one of rank_ratio or energy")
        for name in ("rank_ratio", "energy"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        return self
