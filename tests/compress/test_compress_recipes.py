"""The compression stages in recipes: built-in recipes run, size_bytes is the packed file, errors name fields."""

import json

import pytest
import torch

import optiforge
from optiforge.cli import main
from optiforge.compress import describe_packed, load_packed
from optiforge.errors import RecipeError

# measuring latency is not what these tests check: a few repeats keep them quick
QUICK = ["measure.latency_repeats=2", "measure.throughput_repeats=1", "measure.warmup=1"]


def test_compress_recipe_runs_and_reports_the_packed_size(tmp_path):
    result = optiforge.run_recipe(
        "compress",
        ["train.epochs=3", "stages.0.prune.finetune.epochs=2", "stages.1.share.finetune.epochs=1", *QUICK],
        out=tmp_path,
        progress=False,
        show_table=False,
    )
    rows = {row["stage"]: row for row in result.report["stages"]}
    assert list(rows) == ["train", "prune", "share"]
    for stage in ("prune", "share"):
        artifact = tmp_path / rows[stage]["artifact"]
        assert artifact.suffix == ".ofpk" and rows[stage]["size_bytes"] == artifact.stat().st_size
    assert rows["prune"]["weight_sparsity"] == pytest.approx(0.94, abs=0.01)
    applied = describe_packed(tmp_path / rows["share"]["artifact"])["compression"]
    assert [list(entry) for entry in applied] == [["prune"], ["share"]]  # the configs of both stages
    assert applied[0]["prune"]["schedule"] == {} and applied[1]["share"]["include_bias"] is True
    assert rows["share"]["size_bytes"] < rows["prune"]["size_bytes"] < rows["train"]["size_bytes"] / 5
    assert result.report["exports"][0]["format"] == "packed"
    loaded = load_packed(tmp_path / result.report["exports"][0]["artifact"])
    inputs = torch.rand(8, 64)
    assert torch.equal(loaded(inputs), result.model.eval()(inputs))
    assert json.loads((tmp_path / "report.json").read_text())["stages"][2]["clusters"] == 16


def test_structured_recipe_runs_and_shrinks_the_model(tmp_path):
    result = optiforge.run_recipe(
        "prune-structured",
        [
            "train.epochs=1",
            "model.channels=[16,32,32]",
            "stages.0.prune.finetune.epochs=1",
            "stages.0.prune.structured.iterative_steps=1",
            "train.batch_size=256",
            *QUICK,
        ],
        out=tmp_path,
        progress=False,
        show_table=False,
    )
    train, pruned = result.report["stages"]
    assert pruned["params"] < 0.3 * train["params"]
    assert pruned["size_bytes"] == (tmp_path / pruned["artifact"]).stat().st_size


def test_factorize_stage_in_a_recipe(tmp_path):
    recipe = {
        "name": "lowrank",
        "data": {"name": "digits"},
        "model": {"name": "mlp", "hidden": [128, 64]},
        "train": {"epochs": 1},
        "stages": [{"factorize": {"rank_ratio": 0.1, "finetune": {"epochs": 1}}}],
    }
    result = optiforge.run_recipe(recipe, QUICK, out=tmp_path, progress=False, show_table=False)
    train, factorized = result.report["stages"]
    assert factorized["params"] < train["params"] / 2


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("stages.0.prune.sparsity=1.0", "stages\\[0\\].prune.sparsity: sparsity must be in \\[0, 1\\)"),
        ("stages.1.share.clusters=1", "clusters must be at least 2"),
        ("stages.0.prune.sparsty=0.5", "unknown field 'stages\\[0\\].prune.sparsty'"),
    ],
)
def test_bad_stage_fields_are_named(assignment, message):
    with pytest.raises(RecipeError, match=message):
        optiforge.load_recipe("compress", [assignment])


def test_unknown_layer_in_a_recipe_is_a_one_line_error(tmp_path, capsys):
    code = main(
        [
            "run",
            "compress",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--set",
            "train.epochs=0",
            "--set",
            "stages.0.prune.layers.exclude=[fc9]",
        ]
    )
    assert code == 2
    assert "layers.exclude: no layer matches 'fc9'" in capsys.readouterr().err


def test_a_resumed_run_reenters_the_stages_and_ends_with_the_same_model(tmp_path):
    overrides = [
        "train.epochs=1",
        "model.hidden=[32]",
        "stages.0.prune.finetune.epochs=2",
        "stages.1.share.finetune.epochs=1",
        *QUICK,
    ]
    first = optiforge.run_recipe("compress", overrides, out=tmp_path, progress=False, show_table=False)
    packed = (tmp_path / "share" / "model.ofpk").read_bytes()
    again = optiforge.run_recipe("compress", overrides, out=tmp_path, resume=True, progress=False, show_table=False)
    assert (tmp_path / "share" / "model.ofpk").read_bytes() == packed
    assert again.report["stages"][1]["weight_sparsity"] == first.report["stages"][1]["weight_sparsity"]


@pytest.mark.slow
def test_compress_recipe_meets_the_deep_compression_target(tmp_path):
    result = optiforge.run_recipe("compress", QUICK, out=tmp_path, progress=False, show_table=False)
    rows = {row["stage"]: row for row in result.report["stages"]}
    float_bytes = rows["train"]["params"] * 4
    assert rows["share"]["size_bytes"] * 40 <= float_bytes
    assert rows["share"]["value"] >= rows["train"]["value"] - 0.01
