"""Recipes: schema, readable errors, overrides, built-in names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import optiforge
from optiforge.errors import RecipeError
from optiforge.recipe import builtin_recipes, load_recipe


def test_builtin_recipes_all_validate():
    names = builtin_recipes()
    assert {"quickstart", "mnist1d"} <= set(names)
    for name in names:
        assert load_recipe(name).name


def test_unknown_field_names_path_and_closest_valid_name():
    with pytest.raises(RecipeError) as error:
        load_recipe({"train": {"optimzer": {"lr": 0.1}}})
    message = str(error.value)
    assert "train.optimzer" in message
    assert "did you mean 'optimizer'" in message


def test_unknown_nested_field_lists_allowed_fields():
    with pytest.raises(RecipeError) as error:
        load_recipe({"train": {"optimizer": {"learning_rate": 0.1}}})
    assert "train.optimizer.learning_rate" in str(error.value)
    assert "lr" in str(error.value)


def test_wrong_type_names_field_and_value():
    with pytest.raises(RecipeError, match=r"train\.epochs.*'many'"):
        load_recipe({"train": {"epochs": "many"}})


def test_out_of_range_value_names_bound():
    with pytest.raises(RecipeError, match=r"train\.optimizer\.momentum: .*less than 1"):
        load_recipe({"train": {"optimizer": {"momentum": 1.5}}})


def test_literal_choice_lists_allowed_values():
    with pytest.raises(RecipeError, match=r"hardware\.precision.*'fp32'.*'bf16'"):
        load_recipe({"hardware": {"precision": "fp8"}})


def test_missing_recipe_file_lists_builtins():
    with pytest.raises(RecipeError, match="no recipe file 'missing.yaml'.*quickstart"):
        load_recipe("missing.yaml")


def test_invalid_yaml_reports_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain: {epochs: 3\n")
    with pytest.raises(RecipeError, match="line"):
        load_recipe(path)


def test_overrides_apply_typed_values_and_lr_shorthand():
    recipe = load_recipe("quickstart", ["train.lr=0.05", "train.epochs=3", "model.hidden=[8, 4]"])
    assert recipe.train.optimizer.lr == 0.05
    assert recipe.train.optimizer.name == "sgd"  # the rest of the optimizer section is kept
    assert recipe.train.epochs == 3
    assert recipe.model.options["hidden"] == [8, 4]


def test_override_into_stage_list_by_index():
    recipe = load_recipe({"stages": [{"train": {"epochs": 2}}]}, ["stages.0.train.epochs=7"])
    assert recipe.stages[0].config.epochs == 7


def test_unknown_stage_kind_is_named():
    with pytest.raises(optiforge.ConfigError, match=r"stages\[0\].*unknown stage kind 'trian'.*did you mean 'train'"):
        load_recipe({"stages": [{"trian": {}}]})


def test_stage_field_error_has_full_path():
    with pytest.raises(RecipeError, match=r"stages\[0\]\.train\.epochs"):
        load_recipe({"stages": [{"train": {"epochs": 0}}]})


def test_configs_are_frozen_and_python_api_shares_schema():
    config = optiforge.TrainConfig(epochs=2, lr=0.3)
    assert config.optimizer.lr == 0.3
    with pytest.raises(ValidationError):
        config.epochs = 5  # frozen
    recipe = load_recipe({"train": config.model_dump()})
    assert recipe.train == config
