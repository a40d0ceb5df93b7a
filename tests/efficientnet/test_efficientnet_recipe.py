"""The built-in ``efficientnet`` recipe end to end on a few views (slow: about a minute)."""

from __future__ import annotations

import pytest

import optiforge

SMALL = [
    "data.views=24",
    "measure.latency_repeats=1",
    "measure.warmup=0",
    "measure.throughput_batch=4",
    "measure.throughput_repeats=1",
    # 24 views judge the floor on a few validation views: a miss would search mixed precision layer by layer
    "stages.0.quantize.target.min_fidelity=0.9",
]


@pytest.mark.slow
def test_efficientnet_recipe_ships_openvino_ir_and_an_onnx_graph_with_the_contract_names(tmp_path):
    import onnxruntime
    import torch

    result = optiforge.run_recipe("efficientnet", SMALL, out=tmp_path / "run", progress=False, show_table=False)
    baseline, quantized = result.report["stages"]
    assert baseline["metric"] == "agreement" and baseline["value"] == 1.0
    assert baseline["metrics"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= quantized["value"] <= 1.0 and quantized["metrics"]["cosine"] > 0.9
    assert quantized["agreement"] is not None  # on the validation views, against the float model's logits
    assert 4_000_000 < quantized["params"] < baseline["params"] * 1.05  # the IR's weights, counted in the IR
    exports = {item["format"]: result.run_dir / item["artifact"] for item in result.report["exports"]}
    assert quantized["engine"] == "openvino" and exports["openvino"].suffix == ".xml"
    assert {"stem.conv", "blocks.0._project_conv", "blocks.15._depthwise_conv"} <= set(quantized["float_layers"])
    exported = exports["onnx"]
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [item.name for item in session.get_inputs()] == ["pixel_values"]
    assert [item.name for item in session.get_outputs()] == ["logits"]
    (logits,) = session.run(["logits"], {"pixel_values": torch.zeros(2, 3, 224, 224).numpy()})
    assert logits.shape == (2, 1000)
