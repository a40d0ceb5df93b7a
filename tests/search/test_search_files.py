"""A search keeps on disk only what may ship; the figures stay, so a resumed search rebuilds what it needs."""

from __future__ import annotations

import json

from optiforge.config import MeasureConfig
from optiforge.search.space import prefix_key
from optiforge.stages.search import SearchStageConfig, run_search

FAST_MEASURE = MeasureConfig(latency_repeats=1, warmup=0, throughput_batch=8, throughput_repeats=1)
# factor 0 ruins the model; with objective size every candidate weighs the same, so the first accepted ships
SPACE = {"stages": ["scale_a", "scale_b"], "options": {"scale_a.factor": [0.0, 1.0], "scale_b.factor": [1.0, 2.0]}}


def _config(**fields) -> SearchStageConfig:
    return SearchStageConfig(timing={"measure": FAST_MEASURE, "rounds": 1}, objective="size", **(SPACE | fields))


def _node_folders(folder) -> set[str]:
    return {path.name for path in (folder / "nodes").iterdir()}


def test_only_the_chosen_candidates_files_stay(applied, context, trained):
    ctx = context()
    result, output = run_search(trained, _config(constraint={"max_metric_drop": 0.0}), ctx)
    assert result.chosen is not None and result.chosen.spec.steps[0].config.factor == 1.0
    assert _node_folders(ctx.stage_dir) == {result.chosen.spec.key}
    assert output.artifact.is_file() and output.artifact.parent == ctx.stage_dir / "nodes" / result.chosen.spec.key
    assert not (ctx.stage_dir / "baseline.pt").exists()  # the baseline does not ship
    # every candidate's figures stay for a resumed search
    assert len(list((ctx.stage_dir / "candidates").glob("*.json"))) == len(result.outcomes) == 4
    saved = json.loads((ctx.stage_dir / "search.json").read_text())
    rows = saved["candidates"]
    assert [row["artifact"] is not None for row in rows] == [row["chosen"] for row in rows]


def test_keep_front_keeps_every_front_points_files(applied, context, trained):
    ctx = context()
    result, output = run_search(trained, _config(keep="front", constraint={"max_metric_drop": 0.0}), ctx)
    front = [outcome for outcome in result.outcomes if outcome.spec.name in result.front]
    assert front and len(front) < len(result.outcomes)
    # the chosen point ships even when another meets the constraint less well but is on the front
    assert _node_folders(ctx.stage_dir) == {outcome.spec.key for outcome in [*front, result.chosen]}
    assert all((ctx.run_dir / row["artifact"]).is_file() for row in output.rows)


def test_a_resumed_finished_search_ships_the_same_chosen_point(applied, context, trained):
    first, output = run_search(trained, _config(constraint={"max_metric_drop": 0.0}), context())
    shipped = output.artifact.read_bytes()
    applied.clear()
    again, output = run_search(trained, _config(constraint={"max_metric_drop": 0.0}), context(resume=True))
    assert again.chosen.spec.key == first.chosen.spec.key
    assert len(applied) == 2  # only the chosen candidate's two stages, to hold its model again
    assert output.artifact.read_bytes() == shipped
    assert _node_folders(context().stage_dir) == {first.chosen.spec.key}  # its prefix's folder went again


def test_a_resumed_search_that_ships_a_removed_candidate_builds_its_files_again(applied, context, trained):
    first, _ = run_search(trained, _config(constraint={"max_metric_drop": 0.0}), context())
    # without the constraint the ruined candidate is accepted too, and comes first: its files were removed
    again, output = run_search(trained, _config(constraint={"max_metric_drop": None}), context(resume=True))
    assert again.chosen.spec.steps[0].config.factor == 0.0 and again.chosen.spec.key != first.chosen.spec.key
    assert output.artifact.is_file() and output.model[-1].weight.abs().sum() == 0
    assert _node_folders(context().stage_dir) == {again.chosen.spec.key}
    assert prefix_key(again.chosen.spec.steps[:1]) not in _node_folders(context().stage_dir)
