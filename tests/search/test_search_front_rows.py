"""``keep: front``: every front point gets its own report row, measured on the test split, its artefact kept."""

from __future__ import annotations

import json

import pytest

import optiforge
from optiforge.bench.measure import measure
from optiforge.config import MeasureConfig
from optiforge.stages.search import SearchStageConfig, run_search

FAST_MEASURE = MeasureConfig(latency_repeats=1, warmup=0, throughput_batch=8, throughput_repeats=1)


def test_each_front_point_has_a_row_with_its_test_metric_and_artefact(applied, context, trained, digits):
    # factor 0 ruins the model (never on the front, where the unchanged and the doubled-logit models are)
    space = {"options": {"scale_a.factor": [1.0, 0.0, 2.0]}, "objective": "size", "keep": "front"}
    config = SearchStageConfig(
        timing={"measure": FAST_MEASURE, "rounds": 1}, constraint={"max_metric_drop": None}, **space
    )
    ctx = context()
    result, output = run_search(trained, config, ctx)
    assert result.front and len(result.front) < len(result.outcomes)
    assert [row["stage"] for row in output.rows] == [f"search: {name}" for name in result.front]
    by_name = {outcome.spec.name: outcome for outcome in result.outcomes}
    for row in output.rows:
        outcome = by_name[row["stage"].removeprefix("search: ")]
        assert (ctx.run_dir / row["artifact"]).is_file() and row["front_of"] == "search"
        assert row["chosen"] == (outcome is result.chosen)
        # the row's metric is the test split's, as every report row; the search ranked on the validation split
        assert row["value"] == pytest.approx(measure(outcome.model, digits, config=FAST_MEASURE).value)
        assert row["validation"]["value"] == outcome.figures["value"]
    assert output.info["front"] == result.front


def test_keep_chosen_adds_no_rows(applied, context, trained):
    config = SearchStageConfig(timing={"measure": FAST_MEASURE, "rounds": 1}, options={"scale_a.factor": [1.0, 2.0]})
    _, output = run_search(trained, config, context())
    assert output.rows == []


@pytest.mark.slow  # a short training and a search in a run folder: about 5 s of CPU
def test_the_runner_puts_front_rows_before_the_search_row_which_ships(tmp_path, one_thread):
    search = {
        "options": {"quantize": ["none", {"scheme": "bf16", "engine": "torch"}]},
        "objective": "size",
        "constraint": {"max_metric_drop": 0.05},
        "keep": "front",
        "timing": {"rounds": 1, "measure": FAST_MEASURE.model_dump()},
    }
    recipe = {
        "name": "front-rows",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 2, "batch_size": 64},
        "measure": FAST_MEASURE.model_dump(),
        "stages": [{"search": search}],
    }
    result = optiforge.run_recipe(recipe, out=tmp_path / "run", progress=False)
    stages = [row["stage"] for row in result.report["stages"]]
    front = json.loads((tmp_path / "run" / "search" / "search.json").read_text())["front"]
    assert stages == ["train", *(f"search: {name}" for name in front), "search"]
    shipped = result.report["stages"][-1]
    chosen_row = next(row for row in result.report["stages"][1:-1] if row["chosen"])
    assert chosen_row["size_bytes"] == shipped["size_bytes"] and chosen_row["value"] == shipped["value"]
