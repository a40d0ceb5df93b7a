"""The one selection policy: accept, rank, and what ships when nothing is accepted.

Wherever optiforge builds several candidates and keeps one (an engine chosen
by measurement, layers kept in float, a runtime configuration of an
encoder), it decides the same way:

1. **accept**: a candidate that failed, or that breaks the user's
   constraint (metric drop, fidelity floor), is never chosen;
2. **rank**: among the accepted, the best objective wins (fastest,
   smallest, ...);
3. **fallback**: when no candidate is accepted, the baseline ships,
   unchanged, and the reason says so. A model that breaks the user's
   constraint is never returned in its place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Candidate:
    """One measured option.

    ``objective`` is what candidates are ranked by; ``accepted`` whether it
    meets the constraint; ``figures`` what was measured (reported as is);
    ``payload`` the built thing itself (a model), never reported.
    """

    name: str
    objective: float | None = None
    accepted: bool = False
    figures: dict = field(default_factory=dict)
    error: str | None = None
    payload: Any = field(default=None, repr=False)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "objective": self.objective,
            "accepted": self.accepted,
            **self.figures,
            **({"error": self.error} if self.error else {}),
        }


@dataclass
class Selection:
    """The choice and why; ``chosen`` is ``None`` when the baseline ships."""

    chosen: Candidate | None
    reason: str
    candidates: list[Candidate]

    @property
    def baseline_kept(self) -> bool:
        return self.chosen is None

    def summary(self) -> dict:
        return {
            "chosen": self.chosen.name if self.chosen else "baseline",
            "reason": self.reason,
            "candidates": [candidate.summary() for candidate in self.candidates],
        }


def select(
    candidates: Sequence[Candidate],
    *,
    objective: str,
    maximize: bool,
    constraint: str,
) -> Selection:
    """Apply the policy to measured ``candidates``.

    ``objective`` names what is ranked (``"samples/s at batch 256"``),
    ``constraint`` what acceptance means (``"output cosine >= 0.99"``); both
    appear in the reason.

    >>> fast = Candidate("int8", objective=900.0, accepted=False)
    >>> faithful = Candidate("bf16", objective=500.0, accepted=True)
    >>> select([fast, faithful], objective="samples/s", maximize=True, constraint="cosine >= 0.99").chosen.name
    'bf16'
    >>> select([fast], objective="samples/s", maximize=True, constraint="cosine >= 0.99").baseline_kept
    True
    """
    candidates = list(candidates)
    accepted = [c for c in candidates if c.error is None and c.accepted and c.objective is not None]
    failed = [c for c in candidates if c.error is not None]
    if not accepted:
        reasons = []
        if failed:
            reasons.append("; ".join(f"{c.name} failed: {c.error}" for c in failed))
        missed = [c.name for c in candidates if c.error is None]
        if missed:
            reasons.append(f"{', '.join(missed)} did not meet {constraint}")
        detail = "; ".join(reasons) or "no candidates"
        return Selection(None, f"no candidate met {constraint} ({detail}); the baseline ships unchanged", candidates)
    best = (max if maximize else min)(accepted, key=lambda c: c.objective)
    others = ", ".join(f"{c.name} {c.objective:.4g}" for c in candidates if c is not best and c.objective is not None)
    reason = f"{best.name}: best {objective} ({best.objective:.4g}) meeting {constraint}"
    if others:
        reason += f"; others: {others}"
    return Selection(best, reason, candidates)


def dominates(first: dict, second: dict, keys: Sequence[tuple[str, bool]]) -> bool:
    """Whether figures ``first`` are at least as good as ``second`` on every key and better on one.

    ``keys`` pairs a figure's name with whether higher is better.
    """
    better = False
    for key, maximize in keys:
        a, b = (first[key], second[key]) if maximize else (second[key], first[key])
        if a < b:
            return False
        better = better or a > b
    return better


def pareto_front(candidates: Sequence[Candidate], keys: Sequence[tuple[str, bool]]) -> list[Candidate]:
    """The non-dominated ``candidates`` on the figures ``keys`` (name, higher is better), in input order.

    Failed candidates and those missing a figure are never on the front; candidates with equal
    figures do not dominate each other, so ties are all kept.

    >>> points = [Candidate("a", figures={"accuracy": 0.9, "latency_ms": 2.0}),
    ...           Candidate("b", figures={"accuracy": 0.8, "latency_ms": 1.0}),
    ...           Candidate("c", figures={"accuracy": 0.8, "latency_ms": 3.0})]
    >>> [c.name for c in pareto_front(points, [("accuracy", True), ("latency_ms", False)])]
    ['a', 'b']
    """
    measured = [
        candidate
        for candidate in candidates
        if candidate.error is None and all(candidate.figures.get(key) is not None for key, _ in keys)
    ]
    return [
        candidate
        for candidate in measured
        if not any(dominates(other.figures, candidate.figures, keys) for other in measured if other is not candidate)
    ]
