"""What a search will cost before it runs: candidates, stage applications, fine-tune epochs, measurements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optiforge.search.space import EPOCH_FIELDS, CandidateSpec, ShortenStep, Step, prefix_key, shorten, shorten_step


def _epochs(fields: object) -> int:
    if isinstance(fields, dict):
        return sum(
            value if name in EPOCH_FIELDS and isinstance(value, int) and not isinstance(value, bool) else _epochs(value)
            for name, value in fields.items()
        )
    return 0


def _nodes(specs: Sequence[CandidateSpec]) -> dict[str, Step]:
    """Each distinct prefix once (the tree's nodes), with its last step."""
    nodes: dict[str, Step] = {}
    for spec in specs:
        for depth in range(1, len(spec.steps) + 1):
            nodes.setdefault(prefix_key(spec.steps[:depth]), spec.steps[depth - 1])
    return nodes


@dataclass(frozen=True)
class Cost:
    candidates: int
    stage_applications: int
    stage_applications_unshared: int
    finetune_epochs: int
    measurements: int

    def describe(self) -> str:
        return (
            f"{self.candidates} candidates; {self.stage_applications} stage applications "
            f"({self.stage_applications_unshared} without prefix sharing); at most {self.finetune_epochs} "
            f"fine-tuning epochs; at most {self.measurements} measurements (one baseline)"
        )


def estimate(
    specs: Sequence[CandidateSpec], proxy_fraction: float | None = None, shorten_step: ShortenStep = shorten_step
) -> Cost:
    """The most work searching ``specs`` takes (with a proxy: every candidate short, then all in full).

    >>> from optiforge.search.space import CandidateSpec
    >>> estimate([CandidateSpec("unchanged", ())]).measurements
    2
    """

    def trains(step: Step) -> int:  # a step trains when stretching its epochs changes it
        return _epochs(step.fields) if shorten_step(step, 2.0).key != step.key else 0

    nodes = _nodes(specs)
    epochs = sum(trains(step) for step in nodes.values())
    measurements = len(specs) + 1
    applications, unshared = len(nodes), sum(len(spec.steps) for spec in specs)
    if proxy_fraction is not None:
        short = [shorten(spec, proxy_fraction, shorten_step) for spec in specs]
        changed = [s for s, spec in zip(short, specs, strict=True) if s.key != spec.key]
        short_nodes = {key: step for key, step in _nodes(changed).items() if key not in nodes}
        epochs += sum(trains(step) for step in short_nodes.values())
        applications += len(short_nodes)
        unshared += sum(len(spec.steps) for spec in changed)
        measurements += len(changed)
    return Cost(len(specs), applications, unshared, epochs, measurements)
