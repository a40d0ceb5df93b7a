"""Loading all-MiniLM-L6-v2 offline and pooling exactly like sentence-transformers."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import SENTENCES
from optiforge.encoders import SentenceEncoder, mean_pool, pack, unpack
from optiforge.encoders.loading import check_folder, package_folder, read_settings
from optiforge.errors import ModelError


def test_loads_the_packaged_model_with_its_own_settings(encoder):
    assert isinstance(encoder, SentenceEncoder)
    assert encoder.embedding_dim == 384
    assert encoder.max_length == 256  # sentence_bert_config.json, not the 512 positions of the transformer
    assert sum(parameter.numel() for parameter in encoder.parameters()) == pytest.approx(22.7e6, rel=0.01)


def test_embeddings_match_sentence_transformers(encoder, packed):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(package_folder()), device="cpu")
    expected = torch.as_tensor(reference.encode(SENTENCES, batch_size=len(SENTENCES)))
    with torch.no_grad():
        actual = encoder(packed)
    assert actual.shape == (len(SENTENCES), 384)
    assert torch.allclose(actual, expected, atol=1e-5)
    assert torch.allclose(actual.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-5)


def test_padding_does_not_change_an_embedding(encoder, packed):
    one = packed[1:2]  # the shortest sentence, padded to the longest one in the batch
    with torch.no_grad():
        padded = encoder.encode(*unpack(one, trim=False))
        trimmed = encoder(one)
    assert unpack(one)[0].shape[1] < one.shape[2]
    assert torch.allclose(padded, trimmed, atol=1e-5)


def test_mean_pool_ignores_masked_tokens():
    tokens = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(mean_pool(tokens, mask), torch.tensor([[2.0, 3.0]]))


def test_pack_round_trip_and_bad_shape():
    ids, mask = torch.tensor([[5, 6, 0]]), torch.tensor([[1, 1, 0]])
    again_ids, again_mask = unpack(pack(ids, mask), trim=False)
    assert torch.equal(again_ids, ids) and torch.equal(again_mask, mask)
    with pytest.raises(ModelError, match="packed inputs"):
        unpack(torch.zeros(2, 3, dtype=torch.long))


def test_model_folder_missing_files_is_a_clear_error(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(package_folder(), folder, ignore=shutil.ignore_patterns("model.safetensors"))
    with pytest.raises(ModelError, match="lacks model.safetensors"):
        check_folder(folder)
    with pytest.raises(ModelError, match="not a folder"):
        check_folder(tmp_path / "nowhere")


def test_settings_come_from_the_folder():
    settings = read_settings(package_folder())
    assert (settings.max_length, settings.pooling, settings.normalize) == (256, "mean", True)


def test_minilm_model_refuses_non_token_data(digits):
    import optiforge

    with pytest.raises(ModelError, match="packed token inputs"):
        optiforge.build_model(optiforge.ModelConfig(name="minilm"), digits)
