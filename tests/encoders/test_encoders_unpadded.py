"""The padding-free encoder: same embeddings as the padded model, in PyTorch and in ONNX Runtime."""

from __future__ import annotations

import pytest
import torch
from factories import tiny_bert
from torch import nn

from optiforge.encoders import SentenceEncoder, pack
from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder, optimize_encoder_with_result
from optiforge.encoders.smoothing import smooth_linears
from optiforge.encoders.unpadded import remove_padding, token_layout
from optiforge.errors import ModelError


def _tiny_encoder() -> SentenceEncoder:
    return SentenceEncoder(tiny_bert(layers=2, pooling=False), max_length=16).eval()


def _batch(lengths: list[int], length: int | None = None, seed: int = 0) -> torch.Tensor:
    """Right-padded random ids (never the padding id 0) with the given real lengths."""
    generator = torch.Generator().manual_seed(seed)
    length = length or max(max(lengths), 1)
    ids = torch.randint(1, 100, (len(lengths), length), generator=generator)
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    return pack(ids * mask, mask)


@pytest.mark.parametrize(
    "lengths",
    [[5, 2, 7, 1, 3, 6, 4], [4], [3, 1], [2, 5, 5], [7, 7, 7, 7, 7, 7, 7, 7, 7]],
    ids=["mixed", "one-sentence", "fewer-than-groups", "ties", "no-padding"],
)
def test_same_embeddings_as_the_padded_model(lengths):
    encoder = _tiny_encoder()
    fast = remove_padding(encoder)
    batch = _batch(lengths)
    with torch.no_grad():
        assert torch.allclose(fast(batch), encoder(batch), atol=1e-5)


def test_extra_padding_columns_and_an_empty_row_change_nothing():
    encoder, batch = _tiny_encoder(), _batch([5, 0, 3], length=9)
    fast = remove_padding(encoder, attention_groups=2)
    with torch.no_grad():
        embeddings = fast(batch)
        assert torch.allclose(embeddings, encoder(batch), atol=1e-5)
    assert torch.equal(embeddings[1], torch.zeros_like(embeddings[1]))  # no tokens: zero, as the padded model


def test_real_model_is_exact_and_the_original_is_untouched(encoder, packed):
    before = {name: value.clone() for name, value in encoder.state_dict().items()}
    fast = remove_padding(encoder)
    with torch.no_grad():
        assert torch.allclose(fast(packed), encoder(packed), atol=1e-5)
    assert all(torch.equal(value, before[name]) for name, value in encoder.state_dict().items())
    assert isinstance(encoder.transformer.encoder.layer[0].attention.self.query, nn.Linear)


def test_layout_groups_sentences_by_length_and_covers_every_token():
    mask = (torch.arange(8)[None, :] < torch.tensor([[8], [1], [5], [2]])).long()
    layout = token_layout(mask, groups=2)
    assert layout.keep.numel() == 16
    longest = [int(group_mask.shape[1]) for _, group_mask in layout.groups]
    assert longest == [8, 2]  # the two long sentences, then the two short ones padded only to 2
    assert sorted(int(group_mask.sum()) for _, group_mask in layout.groups) == [3, 13]
    # every real token is read back from exactly the slot that holds it
    rows = torch.cat([group_rows.reshape(-1) for group_rows, _ in layout.groups])
    assert torch.equal(rows[layout.token_rows], torch.arange(16))


def test_smoothed_layers_survive_the_query_key_value_fusion(encoder, packed):
    smoothed = smooth_linears(encoder, [packed], alpha=0.5)
    fast = remove_padding(smoothed)
    with torch.no_grad():
        assert torch.allclose(fast(packed), smoothed(packed), atol=1e-5)


def test_non_bert_models_and_bad_groups_are_refused():
    class Other(nn.Module):
        config = object()

    with pytest.raises(ModelError, match="BERT-like.*Other"):
        remove_padding(SentenceEncoder(Other(), max_length=8))
    with pytest.raises(ModelError, match="attention_groups"):
        remove_padding(_tiny_encoder(), attention_groups=0)


def test_onnx_graph_is_exact_for_other_batch_shapes_and_keeps_float_layers(tmp_path):
    import onnx

    encoder = _tiny_encoder()
    calibration = [_batch([5, 2, 7, 1])]
    config = EncoderRuntimeConfig(quantize="none", remove_padding=True)
    exported = optimize_encoder(encoder, config, calibration, path=tmp_path / "float.onnx")
    graph = onnx.load(str(exported.path)).graph
    assert sum(node.op_type == "MultiHeadAttention" for node in graph.node) == 2 * 4  # 4 length groups per layer
    for lengths in ([3], [6, 1, 2, 7, 7, 4, 2, 5, 1, 3], [2, 2]):  # other batch sizes and lengths than traced
        batch = _batch(lengths, seed=len(lengths))
        with torch.no_grad():
            assert torch.allclose(exported(batch), encoder(batch), atol=1e-5)

    config = EncoderRuntimeConfig(remove_padding=True, layers={"exclude": ["transformer.encoder.layer.0.output.dense"]})
    before = set(vars(encoder))
    result = optimize_encoder_with_result(encoder, config, calibration, path=tmp_path / "int8.onnx")
    assert set(vars(encoder)) == before and set(vars(result.model)) == set(vars(exported))  # no attributes added
    nodes = onnx.load(str(result.model.path)).graph.node
    integer = [node.name for node in nodes if node.op_type == "MatMulInteger"]
    assert result.float_layers == ["transformer.encoder.layer.0.output.dense"]
    assert len(result.float_nodes) == 1 and result.summary()["float_nodes"] == 1
    assert len(integer) == 2 * 4 - 1  # qkv, attention output, intermediate, output per layer, less the float one
    assert not any("layer.0/output/dense" in name for name in integer)
