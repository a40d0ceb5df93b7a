"""Training and parallel options grouped by what they act on; the old flat spellings name their new place."""

from __future__ import annotations

import pytest

import optiforge
from optiforge.errors import ConfigError, RecipeError
from optiforge.recipe import load_recipe


@pytest.mark.parametrize(
    ("section", "old", "value", "new"),
    [
        ("parallel", "microbatches", 8, "parallel.pipeline.microbatches"),
        ("parallel", "schedule", "1f1b", "parallel.pipeline.schedule"),
        ("parallel", "split_points", ["3"], "parallel.pipeline.split_points"),
        ("parallel", "plan", {"1": "colwise"}, "parallel.tensor.plan"),
        ("parallel", "mesh", [2, 2], "parallel.hybrid.mesh"),
        ("parallel", "inner", "tensor", "parallel.hybrid.inner"),
        ("parallel", "cpu_offload", True, "parallel.fsdp.cpu_offload"),
        ("train", "grad_clip_norm", 1.0, "train.gradients.clip_norm"),
        ("train", "accumulation_steps", 2, "train.gradients.accumulation_steps"),
        ("train", "eval_every", 2, "train.validation.every_epochs"),
        ("train", "early_stopping", {"patience": 2}, "train.validation.early_stopping"),
        ("train", "data_on_device", False, "hardware.data_on_device"),
        ("stages[0].quantize", "openvino", {"preset": "mixed"}, "stages[0].quantize.calibration.openvino"),
    ],
)
def test_a_recipe_with_an_old_field_is_told_its_new_path(section, old, value, new):
    recipe: dict = {section: {old: value}}
    if section.startswith("stages[0]."):
        recipe = {"stages": [{section.removeprefix("stages[0]."): {old: value}}]}
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe)
    assert str(error.value) == f"field '{section}.{old}' is now '{new}'"


def test_an_old_field_given_from_python_names_the_new_one():
    with pytest.raises(
        ConfigError, match=r"field 'TrainConfig\.grad_clip_norm' is now 'TrainConfig\.gradients\.clip_norm'"
    ):
        optiforge.TrainConfig(grad_clip_norm=1.0)
    with pytest.raises(ConfigError, match=r"field 'TrainConfig\.data_on_device' is now 'hardware\.data_on_device'$"):
        optiforge.TrainConfig(data_on_device=False)


def test_grouped_fields_take_their_values_from_a_recipe():
    recipe = load_recipe(
        {
            "hardware": {"data_on_device": False},
            "train": {"gradients": {"clip_norm": 0.5, "accumulation_steps": 3}, "validation": {"every_epochs": 2}},
            "parallel": {
                "strategy": "hybrid",
                "ddp": {"bucket_cap_mb": 4, "gradient_as_bucket_view": False, "static_graph": True},
                "hybrid": {"inner": "pipeline", "mesh": [2, 2]},
                "pipeline": {"microbatches": 8, "schedule": "1f1b"},
            },
        }
    )
    assert recipe.hardware.data_on_device is False
    assert (recipe.train.gradients.clip_norm, recipe.train.gradients.accumulation_steps) == (0.5, 3)
    assert recipe.train.validation.every_epochs == 2
    assert recipe.parallel.ddp.model_dump() == {
        "bucket_cap_mb": 4.0,
        "gradient_as_bucket_view": False,
        "static_graph": True,
    }
    assert (recipe.parallel.hybrid.inner, recipe.parallel.pipeline.microbatches) == ("pipeline", 8)


def test_ddp_bucket_size_must_be_positive():
    with pytest.raises(RecipeError, match=r"parallel\.ddp\.bucket_cap_mb: Input should be greater than 0 \(got 0\)"):
        load_recipe({"parallel": {"ddp": {"bucket_cap_mb": 0}}})


@pytest.mark.parametrize("config", [optiforge.TrainConfig, optiforge.ParallelConfig, optiforge.QuantConfig])
def test_run_wide_configs_stay_at_eight_fields_or_fewer(config):
    assert len(config.model_fields) <= 8, sorted(config.model_fields)
