"""Sensitivity analysis: per-layer curves, ratios that meet a target, the command and its use in a recipe."""

import json

import pytest
import torch
from torch import nn

import optiforge
from optiforge.cli import main
from optiforge.compress import PruneConfig
from optiforge.compress.sensitivity import Sensitivity, allocate, analyze
from optiforge.errors import ConfigError


def test_allocation_prunes_the_insensitive_layer_first():
    result = Sensitivity(
        "accuracy",
        True,
        0.9,
        [0.5, 0.9],
        curves={"robust": [0.9, 0.89], "fragile": [0.6, 0.1]},
        removed={"robust": [500, 900], "fragile": [500, 900]},
        total=2000,
    )
    ratios = allocate(result, 0.45)
    assert ratios == {"robust": 0.9, "fragile": 0.0}
    assert allocate(result, 0.6)["fragile"] == 0.5
    with pytest.raises(ConfigError, match="cannot be met"):
        allocate(result, 0.95)


def test_analysis_measures_every_layer_at_every_ratio():
    data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), data)
    optiforge.train(model, data, optiforge.TrainConfig(epochs=2), progress=False)
    result = analyze(model, data, PruneConfig(), [0.5, 0.99])
    assert list(result.curves) == ["1", "3"]
    assert all(len(values) == 2 for values in result.curves.values())
    assert result.curves["1"][1] < result.curves["1"][0] <= result.baseline + 0.05  # 99% hurts more
    assert result.removed["1"] == [1024, round(0.99 * 2048)]
    assert torch.count_nonzero(model[1].weight) == 2048  # the model itself is untouched


def test_command_writes_ratios_a_recipe_can_use(tmp_path, capsys):
    out = tmp_path / "sens"
    code = main(
        [
            "sensitivity",
            "compress",
            "--set",
            "train.epochs=2",
            "--ratios",
            "0.5,0.9,0.98",
            "--target",
            "0.8",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    saved = json.loads((out / "sensitivity.json").read_text())
    assert set(saved["layer_sparsity"]) == {"1", "3", "5"}
    assert (out / "sensitivity.png").stat().st_size > 1000
    assert "stages.0.prune.layer_sparsity=" in capsys.readouterr().out
    result = optiforge.run_recipe(
        "compress",
        [
            "train.epochs=1",
            "stages.0.prune.finetune.epochs=1",
            f"stages.0.prune.layer_sparsity={out / 'sensitivity.json'}",
            "stages.1.share.finetune.epochs=0",
            "measure.latency_repeats=2",
            "measure.throughput_repeats=1",
        ],
        out=tmp_path / "run",
        progress=False,
        show_table=False,
    )
    model = result.model
    for name, ratio in saved["layer_sparsity"].items():
        layer = dict(model.named_modules())[name]
        assert float((layer.weight == 0).float().mean()) == pytest.approx(ratio, abs=0.01)
    removed = sum(saved["removed"][n][saved["ratios"].index(r)] for n, r in saved["layer_sparsity"].items() if r)
    assert removed >= 0.8 * saved["total"]


def test_missing_sensitivity_file_is_a_clear_error():
    with pytest.raises(ConfigError, match="optiforge sensitivity"):
        optiforge.prune(nn.Sequential(nn.Linear(4, 4)), PruneConfig(layer_sparsity="/nonexistent/sens.json"))
