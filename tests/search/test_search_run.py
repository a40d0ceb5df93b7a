"""The search stage: shared prefixes applied once, resume, failures, the fallback, bad input."""

from __future__ import annotations

import collections
import json

import pytest

from optiforge.config import MeasureConfig
from optiforge.errors import ConfigError
from optiforge.stages.search import SearchStageConfig, candidates_of, run_search

FAST_MEASURE = MeasureConfig(latency_repeats=1, warmup=0, throughput_batch=8, throughput_repeats=1)


def count(calls: list) -> collections.Counter:
    return collections.Counter(name for name, _ in calls)


def _config(**fields) -> SearchStageConfig:
    fields.setdefault("timing", {"measure": FAST_MEASURE, "rounds": 1})
    return SearchStageConfig(**fields)


TREE = {"stages": ["scale_a", "scale_b"], "options": {"scale_a.factor": [1.0, 0.5], "scale_b.factor": [1.0, 2.0, 3.0]}}


def test_a_shared_prefix_is_applied_once(applied, context, trained):
    result, _ = run_search(trained, _config(**TREE), context())
    assert len(result.outcomes) == 6 and all(outcome.error is None for outcome in result.outcomes)
    # without sharing: 6 scale_a and 6 scale_b applications
    assert count(applied) == {"scale_a": 2, "scale_b": 6}
    assert result.applied_steps == 8
    saved = json.loads((context().stage_dir / "search.json").read_text())
    assert [row["name"] for row in saved["candidates"] if row["on_front"]] == saved["front"] == result.front
    assert saved["stages_applied"] == 8 and (context().stage_dir / "search.png").is_file()


def test_a_resumed_search_skips_every_measured_candidate(applied, context, trained):
    first, _ = run_search(trained, _config(**TREE), context())
    applied.clear()
    again, _ = run_search(trained, _config(**TREE), context(resume=True))
    assert [o.figures["value"] for o in again.outcomes] == [o.figures["value"] for o in first.outcomes]
    assert any("read from an earlier run" in note for note in again.notes)
    # only the shipped candidate may need its stages again (its model was not kept in memory)
    assert len(applied) <= 2


def test_a_failing_stage_is_recorded_and_the_search_goes_on(applied, context, trained):
    space = {"candidates": [[{"scale_a": {"fail": True}}, "scale_b"], [{"scale_a": {"factor": 1.0}}]]}
    result, output = run_search(trained, _config(**space), context())
    failed, fine = result.outcomes
    assert "scale_a" in failed.error and "refuses" in failed.error and not failed.figures
    assert fine.error is None and fine.figures["value"] is not None
    assert result.chosen is fine
    saved = json.loads((context().stage_dir / "search.json").read_text())
    assert [row.get("error") is not None for row in saved["candidates"]] == [True, False]


def test_when_no_candidate_meets_the_constraint_the_baseline_ships(applied, context, trained):
    # a zero last layer answers one class for everything: far below the baseline's accuracy
    space = {"options": {"scale_a.factor": [0.0]}, "constraint": {"max_metric_drop": 0.0}}
    result, output = run_search(trained, _config(**space), context())
    assert result.chosen is None and result.baseline_kept
    assert output.model is trained and output.artifact is None
    assert output.info["baseline_kept"] is True and "baseline ships" in output.info["reason"]
    assert json.loads((context().stage_dir / "search.json").read_text())["chosen"] == "baseline"


def test_the_constraint_picks_the_best_candidate_that_meets_it(applied, context, trained):
    space = {"options": {"scale_a.factor": [0.0, 1.0]}, "objective": "size", "constraint": {"max_metric_drop": 0.01}}
    result, output = run_search(trained, _config(**space), context())
    assert result.chosen is not None and result.chosen.spec.steps[0].config.factor == 1.0
    assert output.artifact is not None and output.artifact.is_file()


def test_a_budget_too_small_for_one_candidate_keeps_the_baseline(applied, context, trained):
    result, output = run_search(trained, _config(**TREE, effort={"budget_minutes": 1e-6}), context())
    assert count(applied) == {} and result.baseline_kept
    assert any("too small for even one candidate" in note for note in result.notes)
    assert output.model is trained


def test_an_empty_space_is_refused():
    with pytest.raises(ConfigError, match="space is empty"):
        SearchStageConfig()
    with pytest.raises(ConfigError, match="empty list"):
        SearchStageConfig(options={"prune.sparsity": []})


def test_memory_cannot_be_the_objective_of_an_onnx_runtime_candidate():
    space = [[{"quantize": {"scheme": "int8_dynamic", "engine": "onnxruntime"}}]]
    with pytest.raises(ConfigError, match="ONNX Runtime allocates its own memory"):
        SearchStageConfig(candidates=space, objective="memory")


def test_a_candidate_stage_with_a_bad_field_is_named():
    with pytest.raises(ConfigError, match="prune.*sparsty"):
        SearchStageConfig(candidates=[[{"prune": {"sparsty": 0.5}}]])


def test_successive_halving_trains_in_full_only_candidates_that_can_reach_the_front(applied, context, trained):
    space = {
        "stages": [{"scale_a": {"finetune_epochs": 8}}],
        "options": {"scale_a.factor": [0.0, 1.0]},
        "effort": {"proxy": {"fraction": 0.25}},
    }
    result, _ = run_search(trained, _config(**space), context())
    # both candidates as a 2-epoch proxy; only the one whose metric can still meet the constraint in full
    assert [(config.factor, config.finetune_epochs) for _, config in applied] == [(0.0, 2), (1.0, 2), (1.0, 8)]
    phases = {(o.spec.steps[0].config.factor, o.phase) for o in result.outcomes}
    assert phases == {(1.0, "full"), (0.0, "proxy")}
    assert result.chosen is not None and result.chosen.phase == "full"


def test_a_candidate_keeps_its_model_when_a_longer_candidate_changes_it_in_place(applied, context, trained):
    # scale_b multiplies in place; the candidate that stops after scale_a must not see it
    space = {
        "candidates": [["scale_a"], ["scale_a", {"scale_b": {"factor": 0.0}}]],
        "constraint": {"max_metric_drop": 0.0},
    }
    result, output = run_search(trained, _config(**space), context())
    assert count(applied) == {"scale_a": 1, "scale_b": 1}
    assert result.chosen is not None and result.chosen.spec.name == "scale_a"
    assert output.model[-1].weight.abs().sum() > 0
    assert trained[-1].weight.abs().sum() > 0  # the starting model is never handed to a stage


def test_combinations_a_stage_cannot_run_are_listed_but_a_misspelt_field_is_refused():
    options = {"quantize.scheme": ["bf16", "int8_dynamic"], "quantize.engine": ["torch", "torchao"]}
    specs, invalid = candidates_of(SearchStageConfig(options=options))
    assert len(specs) == 3 and [row["name"] for row in invalid] == ["quantize.scheme=bf16, quantize.engine=torchao"]
    assert "cannot run scheme 'bf16'" in invalid[0]["error"]
    with pytest.raises(ConfigError, match="sparsty"):
        SearchStageConfig(options={"prune": ["none", {"sparsty": 0.3}]})


def test_a_flat_search_field_of_earlier_versions_names_its_group():
    from optiforge.errors import RecipeError
    from optiforge.recipe import load_recipe

    for old, new in (("max_metric_drop", "constraint"), ("rounds", "timing"), ("budget_minutes", "effort")):
        with pytest.raises(RecipeError, match=rf"field 'stages\[0\]\.search\.{old}' is now '.*search\.{new}\.{old}'"):
            load_recipe({"stages": [{"search": {"options": {"quantize.scheme": ["bf16"]}, old: 1}}]})
