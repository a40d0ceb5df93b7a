"""``SearchConfig``: the space, the objective, the constraint and how much effort a search may spend."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

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


class ConstraintConfig(Config):
    """What a candidate must keep to be shipped; every floor set applies."""

    max_metric_drop: float | None = Field(0.01, ge=0.0, description="largest loss of the task metric (validation)")
    min_fidelity: float | None = Field(None, gt=0.0, le=1.0, description="least mean output cosine to the baseline")
    min_neighbours_kept: float | None = Field(
        None, ge=0.0, le=1.0, description="task embedding: least share of each sentence's top-10 neighbours kept"
    )


class TimingConfig(Config):
    """How the objective is measured: the batch, and the rounds timed in turn with the baseline."""

    batch: int | None = Field(None, ge=1, le=65_536, description="default: 1 for latency, 256 otherwise")
    rounds: int = Field(5, ge=1, le=1000, description="interleaved timing rounds against the baseline")
    measure: MeasureConfig = MeasureConfig(latency_repeats=10, warmup=2, throughput_repeats=2)


class EffortConfig(Config):
    """How much a search may spend: a time budget, successive halving, and whether the first accepted ends it.

    With ``stop_at_first_accepted`` the candidates are walked in the order given (those sharing a prefix
    together) and, once one meets the constraint, the rest are not built: for a space ordered from the most
    wanted candidate to the least (fewest layers kept float first), the first accepted is the choice.
    """

    budget_minutes: float | None = Field(None, gt=0.0, description="stop starting candidates after this long")
    proxy: ProxyConfig | None = None
    stop_at_first_accepted: bool = Field(False, description="build no candidate after one meets the constraint")


class SearchConfig(Config):
    """A search across techniques (the recipe stage ``search:`` parses into this).

    The space is ``candidates`` (each a list of stages, ``[{prune: {...}}, {quantize: {...}}]``) and/or the
    product of ``options`` (``{"prune.sparsity": [0.3, 0.5], "quantize.scheme": [none, bf16]}``) applied to
    the stages of ``stages`` (kinds named only in ``options`` are added with their defaults, in that order);
    an option named by a kind alone (``quantize: [none, {scheme: bf16}]``) lists whole configs of that stage,
    and the option value ``none`` leaves the stage out of that candidate. Each candidate is measured on the
    validation split (``timing``: the batch and the rounds timed in turn with the baseline); the front is the
    set of candidates no other beats on both the metric and the ``objective``. The shipped candidate meets
    the ``constraint`` (``max_metric_drop``, and ``min_fidelity``, the least mean output cosine to the
    baseline, when set; for sentence encoders (task ``embedding``) also ``min_neighbours_kept``, the least
    share of each validation sentence's top-10 neighbours kept) and is the best front point by ``prefer``
    (default: the objective); when none meets it, the baseline ships and the report says so. Only the files
    of what may ship stay after the search: the chosen candidate's (``keep: chosen``); ``keep: front`` also
    keeps every front point's, measures each on the test split and gives each its own report row.
    ``effort`` bounds the work: ``budget_minutes``, and a ``proxy`` for successive halving.
    """

    renamed_fields: ClassVar[dict[str, str]] = {
        "max_metric_drop": "constraint.max_metric_drop",
        "min_fidelity": "constraint.min_fidelity",
        "min_neighbours_kept": "constraint.min_neighbours_kept",
        "batch": "timing.batch",
        "rounds": "timing.rounds",
        "measure": "timing.measure",
        "budget_minutes": "effort.budget_minutes",
        "proxy": "effort.proxy",
    }

    candidates: list[list[Any]] = Field(default_factory=list)
    stages: list[Any] = Field(default_factory=list)
    options: dict[str, list[Any]] = Field(default_factory=dict)
    objective: Objective = "latency"
    constraint: ConstraintConfig = ConstraintConfig()
    prefer: Literal["fastest", "smallest"] | None = None
    keep: Literal["chosen", "front"] = "chosen"
    timing: TimingConfig = TimingConfig()
    effort: EffortConfig = EffortConfig()

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
        return self.timing.batch or (1 if self.objective == "latency" else 256)
