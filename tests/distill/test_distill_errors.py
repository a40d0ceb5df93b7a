"""Bad input gets a ConfigError that names the field."""

import pytest
import torch
from torch import nn

import optiforge
from optiforge import ConfigError, ModelConfig, RecipeError
from optiforge.distillation import DistillConfig, HintConfig, MixConfig, prepare


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"loss": {"alpha": 1.5}}, r"DistillConfig\.loss\.alpha"),
        ({"loss": {"alpha": -0.1}}, r"DistillConfig\.loss\.alpha"),
        ({"loss": {"temperature": 0}}, r"DistillConfig\.loss\.temperature"),
        ({"loss": {"temperature": -2.0}}, r"DistillConfig\.loss\.temperature"),
        ({"finetune": {"epochs": 0}}, r"DistillConfig: finetune\.epochs must be at least 1"),
    ],
)
def test_out_of_range_values_raise_config_error_naming_the_field(fields, named):
    with pytest.raises(ConfigError, match=named):
        DistillConfig(**fields)


def test_training_defaults_to_a_patient_schedule():
    assert DistillConfig().finetune.epochs == 150
    assert DistillConfig(finetune={"lr": 0.01}).finetune.epochs == 150
    assert DistillConfig(finetune={"epochs": 3}).finetune.epochs == 3


def test_nested_mixing_errors_name_the_nested_field():
    with pytest.raises(ConfigError, match=r"mixing\.kind"):
        DistillConfig(mixing={"kind": "shuffle"})
    with pytest.raises(ConfigError, match=r"MixConfig\.beta"):
        MixConfig(beta=0)


def test_caching_teacher_outputs_with_mixed_inputs_is_refused():
    with pytest.raises(ConfigError, match="cache_teacher"):
        DistillConfig(cache_teacher=True)
    DistillConfig(cache_teacher=True, mixing={"kind": "none"})  # fine without mixing


def test_student_with_another_output_shape_is_refused(digits):
    teacher = optiforge.build_model(ModelConfig(name="mlp", hidden=[16]), digits)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(ConfigError, match=r"student: .*\(5,\).*\(10,\)"):
        prepare(teacher, student, digits, DistillConfig())


def test_unknown_hint_layer_is_refused_with_the_closest_name(digits):
    teacher = optiforge.build_model(ModelConfig(name="mlp", hidden=[16]), digits)
    student = optiforge.build_model(ModelConfig(name="mlp", hidden=[8]), digits)
    with pytest.raises(ConfigError, match=r"hints\[0\]\.student: no layer '22'.*did you mean '2'"):
        prepare(teacher, student, digits, DistillConfig(hints=[HintConfig(student="22", teacher="1")]))
    with pytest.raises(ConfigError, match=r"hints\[0\]\.teacher: no layer 'fc'"):
        prepare(teacher, student, digits, DistillConfig(hints=[HintConfig(student="1", teacher="fc")]))


def test_recipe_errors_name_the_stage_field():
    recipe = {
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 0},
        "stages": [{"distill": {"student": {"model": {"name": "mlp", "hidden": [8]}}, "loss": {"alpha": 2}}}],
    }
    with pytest.raises(RecipeError, match=r"stages\[0\]\.distill\.loss\.alpha"):
        optiforge.load_recipe(recipe)
    recipe["stages"] = [{"distill": {"loss": {"alpha": 0.5}}}]
    with pytest.raises(RecipeError, match=r"missing field 'stages\[0\]\.distill\.student'"):
        optiforge.load_recipe(recipe)
    recipe["stages"] = [{"distill": {"student": {"model": {"name": "mlp"}, "shrink": {"width": 0.5}}}}]
    with pytest.raises(RecipeError, match="exactly one of 'model'"):
        optiforge.load_recipe(recipe)
    recipe["stages"] = [{"distill": {"student": {"name": "mlp", "hidden": [8]}}}]
    with pytest.raises(RecipeError, match=r"distill\.student: give the student as \{model: "):
        optiforge.load_recipe(recipe)
    recipe["stages"] = [{"distill": {"student": {"model": {"name": "mlp"}}, "loss": {"temprature": 2}}}]
    with pytest.raises(RecipeError, match=r"temprature.*did you mean 'temperature'"):
        optiforge.load_recipe(recipe)


def test_old_field_names_are_refused_and_their_replacement_is_known():
    from optiforge.distillation.config import RENAMED

    assert RENAMED["epochs"] == "finetune.epochs" and RENAMED["alpha"] == "loss.alpha"
    recipe = {
        "model": {"name": "mlp", "hidden": [16]},
        "stages": [{"distill": {"student": {"model": {"name": "mlp", "hidden": [8]}}, "epochs": 2}}],
    }
    with pytest.raises(RecipeError, match=r"stages\[0\]\.distill\.epochs"):
        optiforge.load_recipe(recipe)


def test_teacher_given_as_a_state_dict_file_asks_for_the_architecture(digits, tmp_path):
    from optiforge.distillation import resolve_teacher

    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(ConfigError, match=r"teacher: .*checkpoint"):
        resolve_teacher(str(path), digits)
