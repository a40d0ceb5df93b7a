"""ONNX export of the pooled encoder and the ONNX Runtime path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from optiforge.encoders import fidelity, pack, unpack
from optiforge.encoders.onnx_export import export_sentence_encoder
from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder_with_result
from optiforge.encoders.smoothing import SmoothedLinear, smooth_linears


@pytest.fixture(scope="module")
def float_onnx(encoder, packed, tmp_path_factory):
    return export_sentence_encoder(encoder, tmp_path_factory.mktemp("onnx") / "minilm.onnx", packed)


@pytest.fixture(scope="module")
def unpadded_onnx(encoder, packed, tmp_path_factory):
    from optiforge.encoders.unpadded import remove_padding

    return export_sentence_encoder(remove_padding(encoder), tmp_path_factory.mktemp("onnx") / "unpadded.onnx", packed)


def test_exported_graph_has_the_public_interface(float_onnx):
    import onnx

    graph = onnx.load(str(float_onnx)).graph
    assert [item.name for item in graph.input] == ["input_ids", "attention_mask"]
    assert [item.name for item in graph.output] == ["sentence_embedding"]
    for item in graph.input:
        assert item.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = [dim.dim_param for dim in item.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"]


@pytest.mark.parametrize("graph", ["float_onnx", "unpadded_onnx"])
def test_export_runs_in_plain_onnxruntime_without_optiforge(graph, request, encoder, tokenizer):
    # other batch size and sequence length than the traced example: the axes are really dynamic
    from optiforge.encoders.text import tokenize

    float_onnx = request.getfixturevalue(graph)
    texts = [
        "Integers have unlimited precision.",
        "A class is a user-defined type.",
        "Yes, it is.",
        "Floating point numbers are usually implemented using double in C.",
    ]
    tokens = tokenize(tokenizer, texts, encoder.max_length).packed
    input_ids, attention_mask = unpack(tokens)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, onnxruntime
        session = onnxruntime.InferenceSession({str(float_onnx)!r}, providers=["CPUExecutionProvider"])
        feeds = {{"input_ids": np.array({input_ids.tolist()}, dtype=np.int64),
                  "attention_mask": np.array({attention_mask.tolist()}, dtype=np.int64)}}
        (embedding,) = session.run(["sentence_embedding"], feeds)
        assert "optiforge" not in sys.modules and "torch" not in sys.modules
        print(json.dumps(embedding.tolist()))
    """)
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    from_runtime = torch.tensor(json.loads(result.stdout))
    with torch.no_grad():
        expected = encoder(tokens)
    assert from_runtime.shape == (4, 384)
    assert torch.allclose(from_runtime, expected, atol=1e-4)


def test_smoothing_keeps_the_function_and_changes_the_weights(encoder, packed):
    smoothed = smooth_linears(encoder, [packed], alpha=0.5)
    layers = smoothed.transformer.encoder.layer
    wrapped = [module for module in layers.modules() if isinstance(module, SmoothedLinear)]
    assert len(wrapped) == 6 * 6  # q, k, v, attention output, intermediate, output per layer
    query = smoothed.transformer.encoder.layer[0].attention.self.query
    assert query.inverse_scale is smoothed.transformer.encoder.layer[0].attention.self.key.inverse_scale or torch.equal(
        query.inverse_scale, smoothed.transformer.encoder.layer[0].attention.self.key.inverse_scale
    )
    assert not torch.allclose(query.linear.weight, encoder.transformer.encoder.layer[0].attention.self.query.weight)
    with torch.no_grad():
        assert torch.allclose(smoothed(packed), encoder(packed), atol=1e-4)


def test_int8_runtime_is_smaller_and_stays_close(encoder, packed, float_onnx, tmp_path):
    config = EncoderRuntimeConfig(
        quantize="int8_dynamic", layers={"exclude": ["transformer.encoder.layer.*.output.dense"]}
    )
    result = optimize_encoder_with_result(encoder, config, [packed], path=tmp_path / "fast.onnx")
    fast = result.model
    assert result.fused.get("Attention") == 6  # one fused attention op per layer
    assert result.float_layers == [f"transformer.encoder.layer.{index}.output.dense" for index in range(6)]
    assert len(result.float_nodes) == 6
    assert not any("attention" in name for name in result.float_nodes)  # whole-name match: not attention.output
    assert fast.path.stat().st_size < 0.6 * float_onnx.stat().st_size
    with torch.no_grad():
        reference = encoder(packed)
    embeddings = fast(packed)
    scores = fidelity(embeddings, reference)
    assert 0.98 < scores["cosine"] < 1.0 - 1e-7  # quantized: close, but not the float model
    ids, mask = unpack(packed)
    assert torch.equal(fast(ids, mask), embeddings)  # two tensors or one packed tensor, same result
    assert torch.equal(fast(pack(ids, mask)), embeddings)
