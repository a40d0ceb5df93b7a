"""encoder_search and the runtime verb on a tiny BERT: the pick, the float fallback, layer patterns."""

from __future__ import annotations

import json

import pytest
import torch
from factories import tiny_bert
from torch.utils.data import TensorDataset

from optiforge.encoders import SentenceEncoder, pack
from optiforge.encoders.optimize import RENAMED, EncoderRuntimeConfig, optimize_encoder
from optiforge.encoders.search import search_runtime
from optiforge.errors import ConfigError
from optiforge.stages.encoder import EncoderSearchConfig


@pytest.fixture(scope="module")
def tiny():
    encoder = SentenceEncoder(tiny_bert(layers=2, pooling=False), max_length=16).eval()
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 13, (16,), generator=generator)
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    inputs = pack(torch.randint(1, 100, (16, 12), generator=generator) * mask, mask)
    with torch.no_grad():
        validation = TensorDataset(inputs, encoder(inputs))
    return encoder, validation, [inputs[:8]]


def test_no_candidate_meeting_the_floors_ships_the_float_encoder(tiny, tmp_path):
    encoder, validation, calibration = tiny
    before = set(vars(encoder))
    config = EncoderSearchConfig(candidates=[{"quantize": "int8_dynamic", "fuse": False}], min_cosine=0.99999999)
    result = search_runtime(encoder, config, calibration, validation, tmp_path)
    assert result.model is encoder and result.chosen is None and result.artifact is None
    assert "no candidate met cosine >= 0.99999999" in result.selection.reason
    assert "the float PyTorch encoder ships" in result.selection.reason
    written = json.loads((tmp_path / "search.json").read_text())
    assert written["chosen"] == "float" and written["reason"] == result.selection.reason
    (measured,) = written["candidates"]
    assert measured["accepted"] is False and measured["cosine"] < 0.99999999
    assert not list(tmp_path.glob("*.onnx"))  # the rejected candidate's file is gone
    assert set(vars(encoder)) == before


def test_the_fastest_candidate_meeting_the_floors_is_chosen(tiny, tmp_path):
    encoder, validation, calibration = tiny
    candidates = [
        {"quantize": "int8_dynamic", "fuse": False},
        {"quantize": "none", "fuse": False},
        {"quantize": "none", "remove_padding": True},
    ]
    config = EncoderSearchConfig(candidates=candidates, min_cosine=0.9999, min_neighbours_kept=0.9, timing_rounds=1)
    result = search_runtime(encoder, config, calibration, validation, tmp_path)
    measured = result.summary()["candidates"]
    meeting = [i for i, c in enumerate(measured) if c["cosine"] >= 0.9999 and c["neighbours_kept"] >= 0.9]
    assert 1 in meeting and 2 in meeting  # float exports are exact
    assert result.chosen == max(meeting, key=lambda index: measured[index]["speedup"])
    assert [c["accepted"] for c in measured] == [i in meeting for i in range(3)]
    assert result.model.path == result.artifact == tmp_path / "encoder.onnx"
    assert json.loads((tmp_path / "search.json").read_text())["chosen"] == result.chosen


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
