"""The built-in ``minilm`` recipe end to end, shrunk to a few sentences."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import optiforge
from optiforge.errors import ModelError


def _small_minilm(candidates: list[dict], **search) -> dict:
    from importlib.resources import files

    recipe = yaml.safe_load(files("optiforge").joinpath("recipes/minilm.yaml").read_text())
    recipe["data"].update(train_size=32, val_size=16, eval_size=24)
    recipe["measure"] = {"latency_repeats": 1, "warmup": 0, "throughput_batch": 8, "throughput_repeats": 1}
    stage = recipe["stages"][0]["search"]
    stage.update(stages=[], options={}, timing={"rounds": 1, "batch": 8, "measure": recipe["measure"]})
    stage["constraint"] = {**stage["constraint"], **search}
    stage["candidates"] = [[{"encoder_runtime": candidate}] for candidate in candidates]
    return recipe


def test_minilm_recipe_runs_and_exports_the_chosen_encoder(tmp_path):
    candidates = [
        {
            "quantize": "int8_dynamic",
            "remove_padding": True,
            "smoothing": {"alpha": 0.8},
            "calibration_batches": 2,
            "layers": {"exclude": ["transformer.encoder.layer.*.output.dense"]},
        },
        {"quantize": "none", "session": {"fuse": False}, "calibration_batches": 1},  # plain float export: cheap
    ]
    result = optiforge.run_recipe(_small_minilm(candidates), out=tmp_path / "run", progress=False, show_table=False)
    baseline, searched = result.report["stages"]
    assert baseline["metric"] == "cosine" and baseline["value"] == pytest.approx(1.0, abs=1e-6)
    written = json.loads((result.run_dir / "search" / "search.json").read_text())
    measured = written["candidates"]
    assert len(measured) == 2 and all(0.9 < row["value"] <= 1.0 + 1e-6 for row in measured)
    assert 0.9 < searched["value"] <= 1.0 + 1e-6 and 0.0 <= searched["metrics"]["neighbours_kept"] <= 1.0
    assert searched["size_bytes"] == (result.run_dir / searched["artifact"]).stat().st_size
    assert (result.run_dir / "search" / "search.png").is_file()

    import onnxruntime

    exported = result.run_dir / result.report["exports"][0]["artifact"]
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [item.name for item in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert [item.name for item in session.get_outputs()] == ["sentence_embedding"]
    search = result.report["config"]["stages"][0]["search"]
    base = written["baseline"]["value"]
    meeting = [
        row
        for row in measured
        if row["value"] >= base - search["constraint"]["max_metric_drop"] - 1e-12
        and row["neighbours_kept"] >= search["constraint"]["min_neighbours_kept"]
    ]
    assert measured[1] in meeting  # the plain float export is exact
    assert written["chosen"] == searched["chosen"] == min(meeting, key=lambda row: row["latency_ms"])["name"]
    assert exported.stat().st_size == searched["size_bytes"]


@pytest.mark.slow  # the same fallback runs fast on a tiny BERT in test_encoders_search.py
def test_minilm_recipe_ships_the_float_encoder_when_no_candidate_meets_the_floors(tmp_path):
    candidates = [{"quantize": "int8_dynamic", "session": {"fuse": False}, "calibration_batches": 1}]
    recipe = _small_minilm(candidates, max_metric_drop=1e-8)
    result = optiforge.run_recipe(recipe, out=tmp_path / "run", progress=False, show_table=False)
    baseline, searched = result.report["stages"]
    assert searched["chosen"] == "baseline" and searched["baseline_kept"] is True
    assert "no candidate met cosine drop <= 1e-08" in searched["reason"]
    assert searched["value"] == pytest.approx(1.0, abs=1e-6)  # the float encoder itself
    assert searched["artifact"].endswith("model.pt")


def test_encoder_stages_refuse_a_model_that_is_not_an_encoder(digits, tmp_path):
    from optiforge.encoders.optimize import EncoderRuntimeConfig
    from optiforge.stages import STAGES
    from optiforge.stages.base import StageContext

    ctx = StageContext(
        data=digits,
        task=None,
        hardware=optiforge.HardwareConfig(),
        train_config=optiforge.TrainConfig(),
        stage_dir=tmp_path,
        run_dir=tmp_path,
    )
    with pytest.raises(ModelError, match="sentence encoder"):
        STAGES.get("encoder_runtime").apply(
            optiforge.build_model(optiforge.ModelConfig(name="mlp"), digits), EncoderRuntimeConfig(), ctx
        )


def test_length_sorted_batches_keep_each_sentence_with_its_reference():
    from torch.utils.data import TensorDataset

    from optiforge.encoders import pack, unpack
    from optiforge.encoders.batches import batches_from

    lengths = torch.tensor([3, 7, 1, 5, 2, 6, 4])
    mask = (torch.arange(8)[None, :] < lengths[:, None]).long()
    ids = mask * (1 + torch.arange(7)[:, None])  # each sentence's ids name it
    references = torch.arange(7, dtype=torch.float32)[:, None].expand(7, 4)
    dataset = TensorDataset(pack(ids, mask), references)
    in_order, targets = batches_from(dataset, 3)
    assert torch.equal(targets, references)
    assert [int(unpack(batch)[1].shape[1]) for batch in in_order] == [7, 6, 4]  # each trimmed to its longest
    batches, targets = batches_from(dataset, 3, length_sorted=True)
    assert [int(unpack(batch)[1].shape[1]) for batch in batches] == [7, 4, 1]
    names = torch.cat([unpack(batch)[0][:, 0] for batch in batches])
    assert torch.equal(names - 1, targets[:, 0].long())  # references follow their sentences
