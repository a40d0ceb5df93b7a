"""``layers.float_most_sensitive`` as a search dimension: one ranking per prefix, k layers kept float."""

from __future__ import annotations

import json

import pytest
import torch

import optiforge
from optiforge.config import MeasureConfig
from optiforge.errors import ConfigError
from optiforge.quantization import sensitivity
from optiforge.stages.search import SearchStageConfig, candidates_of, run_search

FAST_MEASURE = MeasureConfig(latency_repeats=1, warmup=0, throughput_batch=8, throughput_repeats=1)


@pytest.fixture
def deeper(digits, one_thread):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[24, 16]), digits)
    return optiforge.train(model, digits, optiforge.TrainConfig(epochs=2, batch_size=64), progress=False).model


@pytest.fixture
def rankings_made(monkeypatch):
    """Every call of the one sensitivity implementation, with the layers it ranked."""
    calls: list[list[str]] = []
    original = sensitivity.layer_sensitivity

    def counting(build, evaluate, layers, excluded):  # noqa: ANN001, ANN202
        calls.append(list(layers))
        return original(build, evaluate, layers, excluded)

    monkeypatch.setattr(sensitivity, "layer_sensitivity", counting)
    return calls


def _search(**fields) -> SearchStageConfig:
    return SearchStageConfig(
        timing={"measure": FAST_MEASURE, "rounds": 1}, constraint={"max_metric_drop": None}, **fields
    )


def test_the_ranking_is_computed_once_for_every_k_and_the_k_most_sensitive_stay_float(deeper, context, rankings_made):
    quantize = {"scheme": "int8_dynamic", "engine": "torch"}
    space = {"stages": [{"quantize": quantize}], "options": {"quantize.layers.float_most_sensitive": [1, 2, 3]}}
    # k = 3 would leave nothing to quantize: that candidate fails with a message, the others share one ranking
    result, _ = run_search(deeper, _search(**space), context())
    assert [outcome.error is None for outcome in result.outcomes] == [True, True, False]
    assert "3 would keep every one of the 3 layers" in result.outcomes[2].error
    assert rankings_made == [["1", "3", "5"]]  # one ranking of the three Linear layers, reused by every k
    written = (context().stage_dir / "nodes").rglob("sensitivity.json")
    ranked = [row["layer"] for row in json.loads(next(written).read_text())]
    saved = json.loads((context().stage_dir / "search.json").read_text())["candidates"]
    for row, k in zip(saved[:2], [1, 2], strict=True):  # each candidate's row holds its stage's report info
        assert row["info"]["float_layers"] == ranked[:k]
    kept = [outcome for outcome in result.outcomes if outcome.model is not None]  # front points keep their model
    assert kept
    for outcome in kept:
        k = outcome.spec.steps[0].config.layers.float_most_sensitive
        float_linears = {name for name, module in outcome.model.named_modules() if type(module) is torch.nn.Linear}
        assert float_linears == set(ranked[:k])


def test_without_a_search_each_call_ranks_and_exclude_composes(deeper, digits, rankings_made):
    loader = torch.utils.data.DataLoader(digits.val, batch_size=128)
    config = optiforge.QuantConfig(
        scheme="int8_dynamic", engine="torch", layers={"exclude": ["5"], "float_most_sensitive": 1}
    )
    result = optiforge.quantization.quantize_with_result(deeper, config, calibration=loader, validation=loader)
    assert rankings_made == [["1", "3"]]  # the excluded layer is not ranked: it stays float anyway
    most_sensitive = result.sensitivity[0]["layer"]
    assert set(result.float_layers) == {"5", most_sensitive}
    float_linears = {name for name, module in result.model.named_modules() if type(module) is torch.nn.Linear}
    assert float_linears == {"5", most_sensitive}


def test_a_whole_model_scheme_cannot_keep_sensitive_layers_float_and_is_left_out_of_a_space():
    with pytest.raises(ConfigError, match="float_most_sensitive.*'bf16' converts the whole model"):
        optiforge.QuantConfig(scheme="bf16", layers={"float_most_sensitive": 2})
    space = {"options": {"quantize.scheme": ["bf16", "int8_dynamic"], "quantize.layers.float_most_sensitive": [0, 1]}}
    specs, invalid = candidates_of(SearchStageConfig(**space))
    assert len(specs) == 3 and [row["name"] for row in invalid] == [
        "quantize.scheme=bf16, quantize.layers.float_most_sensitive=1"
    ]
