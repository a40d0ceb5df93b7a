"""Successive halving: which candidates measured with shortened fine-tuning are worth fine-tuning in full.

A proxy is promoted when, with its metric raised by the proxy's ``metric_slack`` (and its fidelity floors
by as much), no other proxy dominates it and it would meet the constraint.
"""

from __future__ import annotations

from collections.abc import Sequence

from optiforge.bench.selection import dominates
from optiforge.search.figures import BaseMeasurer
from optiforge.search.walk import Outcome

SLACKENED_FLOORS = ("fidelity", "neighbours_kept")


def promoted(
    proxies: Sequence[Outcome], measurer: BaseMeasurer, keys: Sequence[tuple[str, bool]], slack: float
) -> set[str]:
    """Keys of proxy-measured candidates that, with ``slack`` on the metric, could reach the front."""
    sign = 1.0 if measurer.higher_is_better else -1.0
    measured = [o for o in proxies if o.error is None and o.skipped is None and o.figures]
    chosen = set()
    for outcome in measured:
        hopeful = dict(outcome.figures, value=outcome.figures["value"] + sign * slack)
        beaten = any(dominates(other.figures, hopeful, keys) for other in measured if other is not outcome)
        floors = {
            figure: min(1.0, (hopeful.get(figure) or 0.0) + slack) for figure in SLACKENED_FLOORS if figure in hopeful
        }
        if not beaten and measurer.accepted(hopeful | floors):
            chosen.add(outcome.spec.key)
    return chosen
