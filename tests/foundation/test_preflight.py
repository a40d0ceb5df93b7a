"""Every mistake a recipe can hold is found before anything is written, by `run` and `validate` alike."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optiforge.cli import main
from optiforge.encoders import SentenceEncoder
from optiforge.encoders.optimize import EncoderRuntimeConfig
from optiforge.errors import ConfigError
from optiforge.preflight import check_recipe
from optiforge.recipe import load_recipe
from optiforge.stages import STAGES

SMALL = ["--set", "model.hidden=[16]", "--set", "train.epochs=1"]
MLP_STUDENT = "{distill: {student: {model: {name: mlp, hidden: [8]}}, finetune: {epochs: 1}}}"

MISTAKES = [
    (["export=[bogus]"], "export: unknown export format 'bogus'"),
    (["train.optimizer.name=bogus"], "train.optimizer.name: unknown optimizer 'bogus'"),
    (["train.optimizer={name: adam, momentum: 0.9}"], "train.optimizer.momentum: Adam has no 'momentum' option"),
    (["stages=[{train: {optimizer: {name: bogus}}}]"], "unknown optimizer 'bogus'"),
    (["stages=[{prune: {layers: {exclude: [typo]}}}]"], "prune.layers.exclude: no layer matches 'typo'"),
    (["stages=[{prune: {layer_sparsity: {typo: 0.5}}}]"], "prune.layer_sparsity: no layer matches 'typo'"),
    (["stages=[{prune: {layer_sparsity: nowhere.json}}]"], "prune.layer_sparsity: no file 'nowhere.json'"),
    (["stages=[{share: {layers: {exclude: [typo]}}}]"], "share.layers.exclude: no layer matches 'typo'"),
    (["stages=[{factorize: {energy: 0.9, layers: {exclude: [typo]}}}]"], "factorize.layers.exclude: no layer matches"),
    (["stages=[{quantize: {layers: {exclude: [typo]}}}]"], "quantize.layers.exclude: no layer matches 'typo'"),
    # the model's layers are 0-4 (Flatten, Linear, ReLU, Dropout, Linear), the student's 0-3: '4' is gone after distill
    (
        [f"stages=[{MLP_STUDENT}, {{quantize: {{layers: {{exclude: ['4']}}}}}}]"],
        "quantize.layers.exclude: no layer matches '4'",
    ),
    (
        [
            "stages=[{distill: {student: {model: {name: mlp, hidden: [8]}}, "
            "teacher: {name: mlp, checkpoint: nowhere.pt}}}]"
        ],
        "nowhere.pt",
    ),
    (
        ["stages=[{distill: {student: {model: {name: mlp, hidden: [8]}}, hints: [{teacher: '1', student: typo}]}}]"],
        "distill.hints[0].student",
    ),
    (["data.name=nosuchdata"], "unknown dataset 'nosuchdata'"),
]


@pytest.mark.parametrize(("overrides", "message"), MISTAKES, ids=[message for _, message in MISTAKES])
def test_each_mistake_exits_2_before_the_run_folder_exists_and_validate_finds_it_too(
    tmp_path, capsys, overrides, message
):
    sets = [argument for override in overrides for argument in ("--set", override)]
    out = tmp_path / "run"
    assert main(["run", *SMALL, *sets, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()
    assert main(["validate", *SMALL, *sets]) == 2
    assert message in capsys.readouterr().err


def test_a_distilled_student_is_what_the_next_stage_is_checked_against():
    student = "{distill: {student: {model: {name: mlp, hidden: [8, 8]}}}}"
    check_recipe(
        load_recipe(
            "quickstart", ["model.hidden=[16]", f"stages=[{student}, {{prune: {{layers: {{exclude: ['5']}}}}}}]"]
        )
    )
    with pytest.raises(ConfigError, match="prune.layers.exclude: no layer matches '5'"):  # the model has no layer 5
        check_recipe(load_recipe("quickstart", ["model.hidden=[16]", "stages=[{prune: {layers: {exclude: ['5']}}}]"]))


def test_checks_leave_the_random_state_as_building_the_model_left_it():
    recipe = load_recipe("quickstart", ["model.hidden=[16]", f"stages=[{MLP_STUDENT}]"])
    check_recipe(recipe)
    after_checks = torch.rand(3)
    torch.manual_seed(recipe.train.seed)
    from optiforge.data import build_data
    from optiforge.models.builtin import build_model

    build_model(recipe.model, build_data(recipe.data))
    assert torch.equal(torch.rand(3), after_checks)


def _tiny_encoder() -> SentenceEncoder:
    layer = nn.ModuleDict({"output": nn.ModuleDict({"dense": nn.Linear(4, 4)})})
    transformer = nn.ModuleDict({"encoder": nn.ModuleDict({"layer": nn.ModuleList([layer])})})
    return SentenceEncoder(transformer, max_length=8)


def test_encoder_stages_check_their_layer_patterns_against_the_encoder():
    check = STAGES.get("encoder_runtime").check
    kept = "transformer.encoder.layer.*.output.dense"
    check(_tiny_encoder(), EncoderRuntimeConfig(layers={"exclude": [kept]}), None)
    with pytest.raises(ConfigError, match="encoder_runtime.layers.exclude: no layer matches 'typo'"):
        check(_tiny_encoder(), EncoderRuntimeConfig(layers={"exclude": ["typo"]}), None)
    search = STAGES.get("encoder_search")
    smoothing = {"alpha": 0.5, "layers": {"include": ["transformer.encoder.layer.*.typo"]}}
    config = search.config(candidates=[{}, {"smoothing": smoothing}])
    with pytest.raises(ConfigError, match=r"encoder_search.candidates\[1\].smoothing.layers.include"):
        search.check(_tiny_encoder(), config, None)
