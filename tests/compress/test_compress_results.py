"""The verbs hand back results and leave the caller's module free of optiforge attributes."""

import pytest
import torch
from torch import nn

import optiforge
from optiforge.compress import (
    FactorizeConfig,
    PruneConfig,
    ShareConfig,
    describe_packed,
    factorize,
    factorize_with_result,
    prune,
    prune_with_result,
    share,
    share_with_result,
)
from optiforge.compress.config import RENAMED
from optiforge.errors import ConfigError, ModelError, RecipeError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64))
        self.head = nn.Linear(64, 4)

    def forward(self, x):
        return self.head(self.encoder(x))


def _optiforge_attributes(model):
    return [key for module in model.modules() for key in vars(module) if key.startswith("optiforge")]


@pytest.mark.parametrize(
    ("verb", "config"),
    [
        (prune, PruneConfig(sparsity=0.5)),
        (share, ShareConfig(clusters=4)),
        (factorize, FactorizeConfig(rank_ratio=0.25)),
        (prune_with_result, PruneConfig(sparsity=0.5)),
        (share_with_result, ShareConfig(clusters=4)),
        (factorize_with_result, FactorizeConfig(rank_ratio=0.25)),
    ],
)
def test_no_optiforge_attribute_on_the_returned_or_the_callers_module(verb, config):
    model = Net()
    before = set(vars(model))
    output = verb(model, config)
    returned = output if isinstance(output, nn.Module) else output.model
    assert set(vars(model)) == before
    assert _optiforge_attributes(model) == [] and _optiforge_attributes(returned) == []
    assert not any(name.startswith("optiforge") for name in dir(returned))


def test_results_name_the_layers_touched_and_skipped():
    pruned = prune_with_result(Net(), PruneConfig(sparsity=0.6, scope="layer", layers={"exclude": ["head"]}))
    assert pruned.layers == ["encoder.0", "encoder.2"] and pruned.skipped == ["head"]
    weights = [pruned.model.encoder[0].weight, pruned.model.encoder[2].weight, pruned.model.head.weight]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert pruned.weight_sparsity == pytest.approx(zeros / sum(w.numel() for w in weights))
    assert pruned.applied == {"prune": {"sparsity": 0.6, "scope": "layer", "layers": {"exclude": ["head"]}}}

    factorized = factorize_with_result(Net(), FactorizeConfig(rank_ratio=0.25, layers={"exclude": ["encoder.0"]}))
    assert factorized.layers == ["encoder.2"] and factorized.skipped == ["encoder.0", "head"]  # the head: keep_last
    unchanged = factorize_with_result(Net(), FactorizeConfig(rank_ratio=0.9))  # rank 58 of 64 saves nothing
    assert unchanged.layers == [] and unchanged.skipped == ["encoder.0", "encoder.2", "head"]


def test_misspelt_exclude_pattern_is_refused_naming_the_closest_layer():
    with pytest.raises(ConfigError, match=r"layers\.exclude: no layer matches 'haed'.*did you mean 'head'"):
        prune(Net(), PruneConfig(layers={"exclude": ["haed"]}))
    with pytest.raises(ConfigError, match=r"layer_sparsity: no layer matches 'encoder\.3'.*did you mean"):
        prune(Net(), PruneConfig(layer_sparsity={"encoder.3": 0.5}))


def test_patterns_match_one_segment_per_star():
    result = prune_with_result(Net(), PruneConfig(sparsity=0.5, layers={"include": ["encoder.*"]}))
    assert result.layers == ["encoder.0", "encoder.2"]
    top_level_only = prune_with_result(Net(), PruneConfig(sparsity=0.5, layers={"exclude": ["*"]}))
    assert top_level_only.layers == ["encoder.0", "encoder.2"] and top_level_only.skipped == ["head"]
    with pytest.raises(ModelError, match="patterns and types of 'layers' leave out the rest"):
        prune(Net(), PruneConfig(layers={"exclude": ["**"]}))


def test_structured_pruning_keeps_the_last_layer_by_default_and_says_so():
    assert PruneConfig(method="structured").layers.keep_last
    assert PruneConfig(method="structured", layers={"exclude": ["encoder.0"]}).layers.keep_last
    assert not PruneConfig(method="structured", layers={"keep_last": False}).layers.keep_last
    assert not PruneConfig().layers.keep_last
    single = nn.Sequential(nn.Flatten(), nn.Linear(8, 4))
    with pytest.raises(ModelError, match=r"keeps the last layer '1' \(layers\.keep_last"):
        prune(single, PruneConfig(method="structured"), example_inputs=torch.randn(2, 8))
    with pytest.raises(ModelError, match=r"factorize keeps the last layer '1'"):
        factorize(single, FactorizeConfig(rank_ratio=0.5))
    with pytest.raises(ModelError, match=r"patterns and types of 'layers' leave out the rest"):
        factorize(Net(), FactorizeConfig(rank_ratio=0.5, layers={"exclude": ["encoder.*"]}))


def test_stage_finetune_epochs_train_that_many_epochs(tmp_path):
    recipe = {
        "name": "prune-finetune",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [16]},
        "train": {"epochs": 0},
        "measure": {"latency_repeats": 2, "throughput_repeats": 1, "warmup": 0},
        "stages": [{"prune": {"sparsity": 0.6, "finetune": {"epochs": 2}}}, {"train": {"epochs": 1}}],
    }
    result = optiforge.run_recipe(recipe, out=tmp_path, progress=False, show_table=False)
    histories = result.report["histories"]
    assert [row["epoch"] for row in histories["prune"]] == [1, 2]
    assert {row["run"] for row in histories["prune"]} == {"finetune"}
    assert len(histories["train-2"]) == 1 and result.report["stages"][2]["epochs"] == 1  # the train stage
    row = result.report["stages"][1]
    assert row["compression"] == [{"prune": {"sparsity": 0.6, "finetune": {"epochs": 2}}}]
    assert row["layers_compressed"] == 2 and row["layers_skipped"] == []
    assert describe_packed(tmp_path / row["artifact"])["compression"] == row["compression"]


def test_old_field_names_are_refused_and_their_replacement_is_known():
    assert RENAMED["finetune_epochs"] == "finetune.epochs"
    recipe = {"model": {"name": "mlp", "hidden": [8]}, "stages": [{"prune": {"finetune_epochs": 2}}]}
    with pytest.raises(RecipeError, match=r"stages\[0\]\.prune\.finetune_epochs"):
        optiforge.load_recipe(recipe)
