"""Every user mistake in a recipe or on the command line ends in one error line and exit status 2."""

from __future__ import annotations

import json
import textwrap
import time

import pytest
import torch

from optiforge.cli import main
from optiforge.errors import ConfigError, OptiforgeError, RecipeError
from optiforge.recipe import MAX_RECIPE_BYTES, MAX_RECIPE_DEPTH, MAX_RECIPE_VALUES, load_recipe

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]\n" for level in range(8)
)

FACTORIES = """
import torch
from torch import nn
from torch.utils.data import TensorDataset


def _blobs(labels):
    inputs = torch.randn(len(labels), 4, generator=torch.Generator().manual_seed(0))
    return TensorDataset(inputs, torch.as_tensor(labels))


def raises():
    raise RuntimeError("the dataset server is down")


def exits():
    raise SystemExit(0)


def int_lists():
    return [1, 2, 3], [4, 5]


def negative_labels():
    return _blobs([0, 1, -1, 1]), _blobs([0, 1])


def float_labels():
    return _blobs([0.0, 1.0, 0.5, 1.0]), _blobs([0.0, 1.0])


def good():
    return _blobs([0, 1, 0, 1]), _blobs([0, 1])


def model_raises(input_shape, num_classes):
    raise ValueError("no such layer")


def model_exits(input_shape, num_classes):
    raise SystemExit(0)
"""


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "bad_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "bad_factories"


def fails(capsys, *args) -> str:
    """Run the CLI in-process, assert one error line and status 2, return the line."""
    code = main([*args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("optiforge: error: "), err
    return lines[0]


def recipe_file(tmp_path, content: str | bytes, name: str = "recipe.yaml") -> str:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(textwrap.dedent(content))
    return str(path)


def test_alias_bomb_is_refused_within_a_second_naming_the_limit(tmp_path, capsys):
    path = recipe_file(tmp_path, BILLION_LAUGHS)
    started = time.perf_counter()
    line = fails(capsys, "validate", path)
    assert time.perf_counter() - started < 1.0
    assert path in line and "aliases expand" in line and f"{MAX_RECIPE_VALUES:,}" in line


def test_alias_bomb_in_a_run_is_refused_before_the_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    line = fails(capsys, "run", recipe_file(tmp_path, BILLION_LAUGHS), "--out", str(out))
    assert "limit" in line
    assert not out.exists()


def test_alias_that_contains_itself_is_refused(tmp_path, capsys):
    line = fails(capsys, "validate", recipe_file(tmp_path, "name: x\nexport: &loop [*loop]\n"))
    assert "line 2" in line and "refers to the mapping or list that contains it" in line


def test_aliases_within_the_limit_still_work():
    recipe = load_recipe({"name": "x"}, ["train={epochs: &e 2, batch_size: *e}"])
    assert recipe.train.epochs == recipe.train.batch_size == 2


def test_alias_bomb_in_an_override_is_refused():
    value = "[" + ", ".join(["&a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"] + ["*a"] * 2000) + "]"
    with pytest.raises(RecipeError, match="limit"):
        load_recipe("quickstart", [f"export={value}"])


def test_nesting_1000_deep_is_refused_naming_the_depth_limit(tmp_path, capsys):
    line = fails(capsys, "validate", recipe_file(tmp_path, "name: " + "[" * 1000 + "]" * 1000))
    assert "line 1" in line and f"deeper than {MAX_RECIPE_DEPTH} levels" in line


def test_oversized_file_is_refused_naming_the_size_limit(tmp_path, capsys):
    line = fails(capsys, "validate", recipe_file(tmp_path, "# padding\n" * (MAX_RECIPE_BYTES // 10 + 1)))
    assert f"{MAX_RECIPE_BYTES:,} bytes" in line


def test_non_utf8_file_names_the_byte_offset(tmp_path, capsys):
    line = fails(capsys, "validate", recipe_file(tmp_path, b"name: caf\xe9\n"))
    assert "not UTF-8" in line and "byte 9" in line and "0xe9" in line


def test_duplicate_key_names_the_key_and_line(tmp_path, capsys):
    path = recipe_file(tmp_path, "name: x\ntrain:\n  epochs: 1\n  epochs: 2\n")
    line = fails(capsys, "validate", path)
    assert "line 4" in line and "duplicate key 'epochs'" in line


def test_merge_keys_may_override_merged_values():
    recipe = load_recipe({"name": "x"}, ["train={<<: {epochs: 1, batch_size: 8}, epochs: 3}"])
    assert (recipe.train.epochs, recipe.train.batch_size) == (3, 8)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2020-13-45", "'2020-13-45' is not a valid timestamp"),
        ("!!int abc", "'abc' is not a valid int"),
        ("!!bool maybe", "'maybe' is not a valid bool"),
        ("0x_", "'0x_' is not a valid int"),
    ],
)
def test_values_yaml_cannot_read_name_the_line(tmp_path, capsys, value, words):
    line = fails(capsys, "validate", recipe_file(tmp_path, f"name: x\ndescription: {value}\n"))
    assert "line 2" in line and words in line


@pytest.mark.parametrize("content", ["", "# only a comment\n", "---\n"])
def test_empty_recipe_is_refused(tmp_path, capsys, content):
    assert "empty" in fails(capsys, "validate", recipe_file(tmp_path, content))


def test_stages_that_are_not_a_list_are_refused(tmp_path, capsys):
    line = fails(capsys, "validate", recipe_file(tmp_path, "name: x\nstages: 5\n"))
    assert "stages: a list of stages" in line and "got 5" in line


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model.hidden=[-5]", "model.hidden: mlp needs a list of positive integers"),
        ("model.hidden=7", "model.hidden: mlp needs a list of positive integers"),
        ("model.dropout=2", "model.dropout: a probability in [0, 1)"),
        ("model.dropout=.nan", "model.dropout"),
        ("model.activation=[1]", "model.activation: unknown [1]"),
        ("train.lr=.inf", "train.optimizer.lr: Input should be a finite number"),
        ("train.optimizer.momentum=.nan", "train.optimizer.momentum: Input should be a finite number"),
        ("train.optimizer.weight_decay=.inf", "weight_decay: Input should be a finite number"),
        ("train.gradients.clip_norm=.inf", "train.gradients.clip_norm: Input should be a finite number"),
        ("train.optimizer.betas=[1.5, 0.9]", "each beta must be in [0, 1)"),
        ("stages=[{prune: {sparsity: .nan}}]", "stages[0].prune.sparsity: Input should be a finite number"),
        ("train.optimizer=5", "train.optimizer: Input should be a valid dictionary"),
        ("train.epochs.count=1", "train.epochs: Input should be a valid integer"),
    ],
)
def test_model_and_training_values_are_checked(capsys, override, words):
    extra = ["--set", "train.lr=1"] if override == "train.optimizer=5" else []
    assert words in fails(capsys, "validate", "quickstart", "--set", override, *extra)


def test_layer_sizes_that_cannot_fit_in_memory_are_refused_before_allocating(capsys):
    line = fails(capsys, "validate", "quickstart", "--set", "model.hidden=[100000000000]")
    assert "parameters" in line and "GB of float32 weights" in line and "GB of memory" in line


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("model={name: cnn2d, channels: [8, 0]}", "model.channels: cnn2d needs a list of positive integers"),
        ("model={name: cnn2d, hidden: 0}", "model.hidden: cnn2d needs a positive integer"),
    ],
)
def test_convolution_sizes_are_checked(capsys, override, words):
    line = fails(capsys, "validate", "quickstart", "--set", "data.image=true", "--set", override)
    assert words in line


@pytest.mark.parametrize("overrides", [5, [5], [b"train.epochs=1"], {"train.epochs": 1}])
def test_python_api_refuses_overrides_that_are_not_strings(overrides):
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        load_recipe("quickstart", overrides)


def test_python_api_takes_one_string_as_one_override():
    assert load_recipe("quickstart", "train.epochs=3").train.epochs == 3


def test_run_recipe_refuses_bad_overrides_before_touching_the_run_folder(tmp_path):
    import optiforge

    with pytest.raises(OptiforgeError):
        optiforge.run_recipe("quickstart", [3], out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("section", "function", "words"),
    [
        ("data", "raises", "RuntimeError: the dataset server is down"),
        ("data", "exits", "SystemExit: 0"),
        ("data", "int_lists", "items must be (tensor, label) pairs, got int"),
        ("data", "negative_labels", "labels must be class indices 0, 1, 2, ..., got -1"),
        ("data", "float_labels", "labels must be integer class indices"),
        ("model", "model_raises", "ValueError: no such layer"),
        ("model", "model_exits", "SystemExit: 0"),
    ],
)
def test_failing_factories_are_named(factories, capsys, section, function, words):
    overrides = ["--set", f"{section}={{factory: '{factories}:{function}'}}"]
    if section == "model":
        overrides += ["--set", f"data.factory={factories}:good"]
    line = fails(capsys, "validate", "quickstart", *overrides)
    assert f"{factories}:{function}" in line and words in line


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "is empty"),
        (b"\x08\x07\x12\x04junk\xff\xfe", "not a readable ONNX model"),
        (b"hello, world", "not a readable ONNX model"),
    ],
)
def test_quantize_onnx_refuses_files_that_are_not_models(tmp_path, capsys, content, words):
    pytest.importorskip("onnx")
    source = tmp_path / "model.onnx"
    source.write_bytes(content)
    line = fails(capsys, "quantize-onnx", str(source), str(tmp_path / "out.onnx"))
    assert "model.onnx" in line and words in line
    assert not (tmp_path / "out.onnx").exists()


def test_quantize_onnx_refuses_a_truncated_model(tmp_path, capsys):
    pytest.importorskip("onnx")
    whole = tmp_path / "whole.onnx"
    torch.onnx.export(torch.nn.Linear(4, 3), torch.zeros(1, 4), str(whole), dynamo=False)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert "not a readable ONNX model" in fails(capsys, "quantize-onnx", str(truncated), str(tmp_path / "out.onnx"))


def test_quantize_onnx_refuses_to_overwrite_its_source(tmp_path, capsys, monkeypatch):
    source = tmp_path / "model.onnx"
    source.write_bytes(b"not touched")
    monkeypatch.chdir(tmp_path)
    line = fails(capsys, "quantize-onnx", "model.onnx", "./model.onnx")
    assert "is the source file" in line
    assert source.read_bytes() == b"not touched"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "cannot be read as JSON"),
        ("[1, 2]", "expected a mapping with 'recipe'"),
        ('{"recipe": "x", "environment": {"device": "cpu"}, "stages": 5}', "'stages' must be a list"),
        ('{"recipe": "x", "environment": {"device": "cpu"}, "stages": [{"stage": "train"}]}', "stages[0].metric"),
    ],
)
def test_report_refuses_a_malformed_report_json(tmp_path, capsys, content, words):
    (tmp_path / "report.json").write_text(content)
    line = fails(capsys, "report", str(tmp_path))
    assert "report.json" in line and words in line


def test_report_prints_a_well_formed_report(tmp_path, capsys):
    row = {"stage": "train", "metric": "accuracy", "value": 0.9, "params": 10, "nonzero_params": 10}
    row |= {"size_bytes": 40, "latency_ms": {"p50": 0.1}, "throughput_per_s": 100.0, "peak_memory_bytes": None}
    row |= {"seconds": 1.0, "artifact": None}
    report = {"recipe": "x", "environment": {"device": "cpu"}, "stages": [row]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert main(["report", str(tmp_path)]) == 0
    assert "train" in capsys.readouterr().out


def test_error_messages_with_line_breaks_print_on_one_line(factories, tmp_path, capsys):
    module = tmp_path / "multiline_factory.py"
    module.write_text("def load():\n    raise RuntimeError('first line\\nsecond line')\n")
    line = fails(capsys, "validate", "quickstart", "--set", "data.factory=multiline_factory:load")
    assert "first line second line" in line


def test_nan_loss_before_the_first_checkpoint_says_none_was_written(tmp_path, digits, small_mlp):
    import optiforge
    from optiforge.errors import TrainingError

    class Explode(optiforge.Callback):
        def compute_loss(self, state, inputs, targets, outputs, loss):
            return loss * float("nan")

    with pytest.raises(TrainingError, match="no checkpoint was written yet") as error:
        optiforge.train(
            small_mlp,
            digits,
            optiforge.TrainConfig(epochs=2),
            callbacks=[Explode()],
            checkpoint_dir=tmp_path,
            progress=False,
        )
    assert "checkpoint.pt" not in str(error.value)
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("body", ["raise SystemExit(0)", "raise RuntimeError('broken at import')"])
def test_a_factory_module_that_fails_on_import_is_named(tmp_path, monkeypatch, capsys, body):
    (tmp_path / "fails_on_import.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = fails(
        capsys, "validate", "quickstart", "--set", "data.factory=fails_on_import:load", "--set", "data.name=null"
    )
    assert "importing module 'fails_on_import' raised" in line


def test_python_m_cli_sees_the_plugin_commands():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "optiforge.cli", "quantize-onnx", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "usage: optiforge quantize-onnx" in result.stdout, result.stderr
