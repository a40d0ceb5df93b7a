"""``effort.stop_at_first_accepted``: candidates walked in order, none built after the first meeting the constraint."""

from __future__ import annotations

import json

from optiforge.config import MeasureConfig
from optiforge.stages.search import SearchStageConfig, run_search

FAST_MEASURE = MeasureConfig(latency_repeats=1, warmup=0, throughput_batch=8, throughput_repeats=1)
# a zero last layer answers one class for everything (far below the baseline); 1.0 and 2.0 keep every argmax
FACTORS = [0.0, 1.0, 2.0]


def _config(stop: bool) -> SearchStageConfig:
    return SearchStageConfig(
        options={"scale_a.factor": FACTORS},
        objective="size",
        constraint={"max_metric_drop": 0.0},
        timing={"measure": FAST_MEASURE, "rounds": 1},
        effort={"stop_at_first_accepted": stop},
    )


def test_no_candidate_after_the_first_accepted_is_built(applied, context, trained):
    result, _ = run_search(trained, _config(stop=True), context())
    assert [config.factor for _, config in applied] == [0.0, 1.0]  # 2.0 never applied
    missed, first, later = result.outcomes
    assert missed.figures and first.figures and not later.figures
    assert result.chosen is first
    assert later.skipped and first.spec.name in later.skipped and result.applied_steps == 2
    assert any(f"{first.spec.name} met the constraint: 1 later" in note for note in result.notes)
    saved = json.loads((context().stage_dir / "search.json").read_text())
    assert [row.get("skipped") is not None for row in saved["candidates"]] == [False, False, True]


def test_without_it_every_candidate_is_built(applied, context, trained):
    result, _ = run_search(trained, _config(stop=False), context())
    assert [config.factor for _, config in applied][: len(FACTORS)] == FACTORS  # then the chosen may be rebuilt
    assert not any(outcome.skipped for outcome in result.outcomes)


def test_a_resumed_search_stops_at_the_accepted_candidate_it_read(applied, context, trained):
    run_search(trained, _config(stop=True), context())
    applied.clear()
    again, _ = run_search(trained, _config(stop=True), context(resume=True))
    assert all(config.factor != 2.0 for _, config in applied)
    assert again.outcomes[2].skipped and again.chosen is again.outcomes[1]
