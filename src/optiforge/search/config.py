"""``SearchConfig``: the space, the objective, the constraint and how much effort a search may spend."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from optiforge.config import Config, MeasureConfig

Objective = Literal["latency", "throughput", "size", "memory"]
OBJECTIVES: tuple[str, ...] = Objective.__args__  # type: ignore[attr-defined]


class ProxyConfig(Config):
    """Successive halving: every candidate first with its fine-tuning shortened, then in full only when it can
    still reach the front.

    Every ``epochs`` field of a candidate's stages (``finetune.epochs`` included) is multiplied by ``fraction``
    (rounded up, at least 1). A candidate is trained in full when, with its metric raised by
    ``metric_slack``, no other candidate would dominate it and it would meet the constraint.
    """

    fraction: float = Field(0.25, gt=0.0, lt=1.0)
    metric_slack: float = Field(0.01, ge=0.0)


class SearchConfig(Config):
    """A search across techniques (the recipe stage ``search:`` parses into this).

    The space is ``candidates`` (each a list of stages, ``[{prune: {...}}, {quantize: {...}}]``) and/or the
    product of ``options`` (``{"prune.sparsity": [0.3, 0.5], "quantize.scheme": [none, bf16]}``) applied to
    the stages of ``stages`` (kinds named only in ``options`` are added with their defaults, in that order);
    an option named by a kind alone (``quantize: [none, {scheme: bf16}]``) lists whole configs of that stage,
    and the option value ``none`` leaves the stage out of that candidate. Each candidate is measured on the
    validation split; the front is the set of candidates no other beats on both the metric and the
    ``objective``. The shipped candidate meets the constraint (``max_metric_drop``, and ``min_fidelity``,
    the least mean output cosine to the baseline, when set; for sentence encoders (task ``embedding``)
    also ``min_neighbours_kept``, the least share of each validation sentence's top-10 neighbours kept)
    and is the best front point by ``prefer`` (default: the objective); when none meets it, the baseline
    ships and the report says so. Only the files of what may ship stay after the search: the chosen
    candidate's (``keep: chosen``); ``keep: front`` also keeps every front point's, measures each on the
    test split and gives each its own report row.
    """

    candidates: list[list[Any]] = Field(default_factory=list)
    stages: list[Any] = Field(default_factory=list)
    options: dict[str, list[Any]] = Field(default_factory=dict)
    objective: Objective = "latency"
    batch: int | None = Field(None, ge=1, le=65_536, description="default: 1 for latency, 256 otherwise")
    max_metric_drop: float | None = Field(0.01, ge=0.0)
    min_fidelity: float | None = Field(None, gt=0.0, le=1.0)
    min_neighbours_kept: float | None = Field(None, ge=0.0, le=1.0, description="task embedding only")
    prefer: Literal["fastest", "smallest"] | None = None
    keep: Literal["chosen", "front"] = "chosen"
    budget_minutes: float | None = Field(None, gt=0.0)
    proxy: ProxyConfig | None = None
    rounds: int = Field(5, ge=1, le=1000, description="interleaved timing rounds against the baseline")
    measure: MeasureConfig = MeasureConfig(latency_repeats=10, warmup=2, throughput_repeats=2)

    @model_validator(mode="after")
    def _not_empty(self) -> SearchConfig:
        if not self.candidates and not self.options and not self.stages:
            raise ValueError(
                "the search space is empty: give candidates (a list of stage lists) or options "
                "(e.g. {'prune.sparsity': [0.3, 0.5]})"
            )
        for name, values in self.options.items():
            if not values:
                raise ValueError(f"options.{name}: an empty list of values leaves no candidate")
        return self

    @property
    def timing_batch(self) -> int:
        return self.batch or (1 if self.objective == "latency" else 256)
