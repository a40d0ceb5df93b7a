"""Typed configs of the compression verbs; recipe stages parse into the same objects."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from optiforge.config import Config, FinetuneConfig
from optiforge.layers import LayerFilter

# fields that were replaced: the recipe error for an old name points at its replacement
RENAMED = {
    "finetune_epochs": "finetune.epochs",
    "gradual": "schedule",  # schedule: {end: 0.5, updates: 10} is a gradual schedule with those settings
}


def _check_fraction(value: float, name: str, show: bool = False) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1)" + (f", got {value}" if show else ""))
    return value


def _keep_last_by_default(data: Any) -> Any:
    """``layers.keep_last`` is on unless the user set it: the last layer's outputs are the model's outputs."""
    if not isinstance(data, dict):
        return data
    layers = data.get("layers")
    if layers is None:
        return {**data, "layers": {"keep_last": True}}
    if isinstance(layers, dict) and "keep_last" not in layers:
        return {**data, "layers": {**layers, "keep_last": True}}
    if isinstance(layers, LayerFilter) and "keep_last" not in layers.model_fields_set:
        return {**data, "layers": layers.model_copy(update={"keep_last": True})}
    return data


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
            raise ValueError(f"schedule.end ({self.end}) must be after schedule.start ({self.start})")
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
    gives per-layer values (a mapping of layer patterns, or the path of a
    ``sensitivity.json`` written by ``optiforge sensitivity``); listed layers
    take their own value. ``schedule`` is ``oneshot``, or gradual pruning
    during fine-tuning: ``gradual`` or a mapping of :class:`GradualConfig`
    settings. Structured pruning keeps the last layer (``layers.keep_last``)
    unless told otherwise.

    >>> from optiforge.compress import PruneConfig
    >>> config = PruneConfig(sparsity=0.9, schedule="gradual", finetune={"epochs": 10})
    >>> config.schedule.end, config.scope
    (0.75, 'global')
    """

    method: Literal["magnitude", "structured"] = "magnitude"
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    schedule: GradualConfig | None = Field(
        None, description="None (oneshot) or the gradual schedule; recipes write 'oneshot', 'gradual' or a mapping"
    )
    finetune: FinetuneConfig = FinetuneConfig()
    layers: LayerFilter = LayerFilter()
    layer_sparsity: dict[str, float] | str | None = None
    structured: StructuredConfig = StructuredConfig()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("method") == "structured":
            data = _keep_last_by_default(data)
        return data

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        if value is None or value == "oneshot":
            return None
        if value == "gradual":
            return {}
        if isinstance(value, str):
            raise ValueError(f"schedule must be 'oneshot', 'gradual' or a mapping of gradual settings, got '{value}'")
        return value

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
        if self.schedule is not None and self.finetune.epochs < 1:
            raise ValueError("a gradual schedule prunes during fine-tuning: set finetune.epochs >= 1")
        if self.schedule is not None and self.method == "structured":
            raise ValueError(
                "a gradual schedule is for method 'magnitude'; structured pruning uses structured.iterative_steps"
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
    finetune: FinetuneConfig = FinetuneConfig()
    layers: LayerFilter = LayerFilter()
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
    ones only where that saves parameters. The last layer is kept
    (``layers.keep_last``) unless told otherwise.

    >>> from optiforge.compress import FactorizeConfig
    >>> config = FactorizeConfig(energy=0.9)
    >>> config.rank_ratio is None, config.layers.keep_last
    (True, True)
    """

    rank_ratio: float | None = None
    energy: float | None = None
    finetune: FinetuneConfig = FinetuneConfig()
    layers: LayerFilter = LayerFilter()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return _keep_last_by_default(data)

    @model_validator(mode="after")
    def _one_rule(self) -> FactorizeConfig:
        if (self.rank_ratio is None) == (self.energy is None):
            raise ValueError("give exactly one of rank_ratio or energy")
        for name in ("rank_ratio", "energy"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        return self


PruneConfig.renamed_fields = RENAMED
ShareConfig.renamed_fields = {"finetune_epochs": RENAMED["finetune_epochs"]}
FactorizeConfig.renamed_fields = {"finetune_epochs": RENAMED["finetune_epochs"]}
