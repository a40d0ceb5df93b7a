"""encoder_search as a search, and the runtime verb on a tiny BERT: the pick, the float fallback, layer choices."""

from __future__ import annotations

import json

import pytest
import torch
from factories import tiny_bert
from torch.utils.data import TensorDataset

import optiforge
from optiforge.config import MeasureConfig
from optiforge.data.builtin import TaskData
from optiforge.encoders import SentenceEncoder, pack
from optiforge.encoders.optimize import RENAMED, EncoderRuntimeConfig, optimize_encoder, optimize_encoder_with_result
from optiforge.errors import ConfigError
from optiforge.quantization import sensitivity
from optiforge.stages import STAGES, StageContext
from optiforge.stages.encoder import EncoderSearchConfig
from optiforge.stages.search import SearchStageConfig, candidates_of, run_search
from optiforge.tasks import task_for

FAST_MEASURE = MeasureConfig(latency_repeats=1, warmup=0, throughput_batch=8, throughput_repeats=1)
UNFUSED = {"session": {"fuse": False}, "calibration_batches": 1}


@pytest.fixture(scope="module")
def tiny():
    encoder = SentenceEncoder(tiny_bert(layers=2, pooling=False), max_length=16).eval()
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 13, (16,), generator=generator)
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    inputs = pack(torch.randint(1, 100, (16, 12), generator=generator) * mask, mask)
    with torch.no_grad():
        validation = TensorDataset(inputs, encoder(inputs))
    data = TaskData(validation, validation, validation, (2, 12), 0, task="embedding", name="tiny-sentences")
    return encoder, data, [inputs[:8]]


@pytest.fixture
def context(tiny, tmp_path):
    _, data, _ = tiny
    return StageContext(
        data=data,
        task=task_for("embedding"),
        hardware=optiforge.HardwareConfig(device="cpu"),
        train_config=optiforge.TrainConfig(epochs=0, batch_size=8),
        stage_dir=tmp_path / "encoder_search",
        run_dir=tmp_path,
        progress=False,
    )


def _encoder_search(candidates: list[dict], **fields) -> SearchStageConfig:
    search = EncoderSearchConfig(candidates=candidates, batch_size=8, timing_rounds=1, **fields).search()
    return search.model_copy(update={"measure": FAST_MEASURE})


def test_no_candidate_meeting_the_floors_ships_the_float_encoder(tiny, context):
    encoder, _, _ = tiny
    config = _encoder_search([{"quantize": "int8_dynamic", **UNFUSED}], min_cosine=0.99999999)
    result, output = run_search(encoder, config, context)
    assert output.model is encoder and result.baseline_kept and output.artifact is None
    assert "cosine drop <= 1e-08 and neighbours kept >= 0.95" in result.selection.reason
    assert "baseline ships" in result.selection.reason
    written = json.loads((context.stage_dir / "search.json").read_text())
    assert written["chosen"] == "baseline" and written["constraint"]["min_neighbours_kept"] == 0.95
    (measured,) = written["candidates"]
    assert measured["value"] < 0.99999999 and 0.0 <= measured["neighbours_kept"] <= 1.0


def test_the_fastest_candidate_meeting_both_floors_is_chosen(tiny, context):
    encoder, _, _ = tiny
    candidates = [{"quantize": "int8_dynamic", **UNFUSED}, {"quantize": "none", **UNFUSED}]
    config = _encoder_search(candidates, min_cosine=0.9999, min_neighbours_kept=0.9)
    result, output = run_search(encoder, config, context)
    meeting = [
        outcome
        for outcome in result.outcomes
        if outcome.figures["value"] >= result.baseline["value"] - config.constraint.max_metric_drop - 1e-12
        and outcome.figures["neighbours_kept"] >= 0.9
    ]
    assert any(outcome.spec.steps[0].config.quantize == "none" for outcome in meeting)  # a float export is exact
    assert result.chosen is min(meeting, key=lambda outcome: outcome.figures["latency_ms"])
    assert output.artifact.suffix == ".onnx" and output.model.path == output.artifact
    # the speed was timed on every validation batch, each trimmed to its own longest sentence
    assert result.chosen.figures["batch"] == 8


def test_neighbours_kept_is_refused_for_a_task_that_has_no_neighbours(digits, tmp_path):
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[8]), digits)
    config = SearchStageConfig(
        options={"quantize.scheme": ["bf16"]},
        constraint={"min_neighbours_kept": 0.9},
        timing={"measure": FAST_MEASURE, "rounds": 1},
    )
    ctx = StageContext(
        data=digits,
        task=task_for("classification"),
        hardware=optiforge.HardwareConfig(device="cpu"),
        train_config=optiforge.TrainConfig(),
        stage_dir=tmp_path / "search",
        run_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(ConfigError, match=r"min_neighbours_kept.*task 'embedding'.*accuracy"):
        run_search(model, config, ctx)


@pytest.mark.slow  # three graphs built and a ranking of 12 layers: about 20 s of CPU
def test_float_most_sensitive_ranks_the_graph_once_for_every_k(tiny, context, monkeypatch):
    encoder, _, _ = tiny
    calls = []
    original = sensitivity.layer_sensitivity
    monkeypatch.setattr(sensitivity, "layer_sensitivity", lambda *a: calls.append(list(a[2])) or original(*a))
    space = {
        "stages": [{"encoder_runtime": {"quantize": "int8_dynamic", **UNFUSED}}],
        "options": {"encoder_runtime.layers.float_most_sensitive": [1, 2, 3]},
        "constraint": {"max_metric_drop": None},
        "timing": {"measure": FAST_MEASURE, "rounds": 1},
    }
    result, _ = run_search(encoder, SearchStageConfig(**space), context)
    assert [outcome.error for outcome in result.outcomes] == [None, None, None]
    assert len(calls) == 1 and len(calls[0]) == 12  # 6 Linear layers per transformer layer, ranked once


def test_the_k_most_sensitive_layers_stay_float_and_exclude_composes(tiny, tmp_path):
    encoder, data, calibration = tiny
    excluded = "transformer.encoder.layer.0.output.dense"
    config = EncoderRuntimeConfig(
        quantize="int8_dynamic",
        remove_padding=True,
        smoothing={"alpha": 0.8},  # smoothed layers are wrapped: their nodes are found inside the wrapper
        layers={"exclude": [excluded], "float_most_sensitive": 2},
    )
    rankings: dict = {}
    result = optimize_encoder_with_result(encoder, config, calibration, path=tmp_path / "a.onnx", rankings=rankings)
    ranked = [row["layer"] for row in rankings["layers"]]
    # query/key/value are one qkv matrix: the graph's own layers are ranked, the excluded one is not
    assert len(ranked) == 5 and excluded not in ranked and not any(".self." in name for name in ranked)
    assert result.float_layers == [excluded, *ranked[:2]]
    assert result.summary()["float_nodes"] == 3


def test_sensitive_layers_need_an_int8_graph_and_are_left_out_of_a_float_candidate():
    with pytest.raises(ConfigError, match="float_most_sensitive.*quantize is 'none'"):
        EncoderRuntimeConfig(quantize="none", layers={"float_most_sensitive": 1})
    space = {
        "stages": ["encoder_runtime"],
        "options": {  # a whole config per value: quantize 'none' as a field value would leave the stage out
            "encoder_runtime": [{"quantize": "none"}, {"quantize": "int8_dynamic"}],
            "encoder_runtime.layers.float_most_sensitive": [0, 1],
        },
    }
    specs, invalid = candidates_of(SearchStageConfig(**space))
    assert len(specs) == 3 and len(invalid) == 1 and "quantize is 'none'" in invalid[0]["error"]


def test_encoder_search_is_a_search_of_one_encoder_runtime_stage_per_candidate():
    config = EncoderSearchConfig(candidates=[{"quantize": "none"}, {"remove_padding": True}], min_cosine=0.997)
    search = config.search()
    assert search.candidates == [
        [{"encoder_runtime": {"quantize": "none"}}],
        [{"encoder_runtime": {"remove_padding": True}}],
    ]
    assert search.constraint.max_metric_drop == pytest.approx(0.003) and search.constraint.min_neighbours_kept == 0.95
    assert search.objective == "latency" and search.timing.batch == 32
    assert STAGES.get("encoder_search").config is EncoderSearchConfig


def test_misspelt_and_short_layer_patterns_are_refused_with_the_closest_name(tiny, tmp_path):
    encoder, _, calibration = tiny
    misspelt = EncoderRuntimeConfig(layers={"exclude": ["transformer.encoder.layer.0.output.dens"]})
    with pytest.raises(ConfigError, match=r"layers.exclude.*did you mean 'transformer.encoder.layer.0.output.dense'"):
        optimize_encoder(encoder, misspelt, calibration, path=tmp_path / "never.onnx")
    short = EncoderRuntimeConfig(smoothing={"alpha": 0.5, "layers": {"include": ["encoder.layer.*.output.dense"]}})
    with pytest.raises(ConfigError, match="smoothing.layers.include: no layer matches 'encoder.layer"):
        optimize_encoder(encoder, short, calibration, path=tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()


def test_removed_fields_are_refused_and_named_in_renamed():
    for old, new in RENAMED.items():
        with pytest.raises(ConfigError, match=old):
            EncoderRuntimeConfig(**{old: 0.5})
        assert new.split(".")[0] in EncoderRuntimeConfig.model_fields
    assert len(EncoderRuntimeConfig.model_fields) <= 8
