"""Sentence encoders in OpenVINO (padded and padding-free), and the sentence-transformers model folder.

The tiny folder holds MiniLM's tokenizer and configs around a 2-layer, 32-wide BERT.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from optiforge.encoders import pack, unpack
from optiforge.encoders.openvino_export import OpenVinoSentenceEncoder, openvino_sentence_encoder
from optiforge.encoders.sentence_transformers_export import (
    ONNX_FILE,
    OPENVINO_FILE,
    OPENVINO_INT8_FILE,
    export_sentence_transformers,
)
from optiforge.encoders.unpadded import remove_padding
from optiforge.errors import ModelError
from optiforge.exporters import export

pytest.importorskip("openvino")

SENTENCES = [
    "The assert statement inserts debugging assertions into a program.",
    "A short sentence.",
    "Dictionaries map hashable keys to arbitrary values.",
    "Exceptions can be chained explicitly with the from clause.",
    "Lists are mutable sequences.",
]
MAX_LENGTH = 32


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    import transformers

    from optiforge.encoders.loading import package_folder

    source = package_folder()
    folder = tmp_path_factory.mktemp("tiny-sentence-transformer")
    for item in source.iterdir():
        if item.name == "model.safetensors":
            continue
        (shutil.copytree if item.is_dir() else shutil.copyfile)(item, folder / item.name)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_LENGTH,
    )
    torch.manual_seed(0)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    settings = json.loads((folder / "sentence_bert_config.json").read_text())
    (folder / "sentence_bert_config.json").write_text(json.dumps(settings | {"max_seq_length": MAX_LENGTH}))
    return folder


@pytest.fixture(scope="module")
def tiny_encoder(tiny_folder):
    from optiforge.encoders import load_sentence_encoder

    return load_sentence_encoder(tiny_folder)


@pytest.fixture(scope="module")
def tiny_packed(tiny_folder, tiny_encoder):
    from optiforge.encoders.loading import load_tokenizer
    from optiforge.encoders.text import tokenize

    return tokenize(load_tokenizer(tiny_folder), SENTENCES, tiny_encoder.max_length).packed


def _batch(lengths: list[int], length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (len(lengths), length), generator=generator)
    mask = (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()
    return pack(ids * mask, mask)


@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "remove_padding"])
def test_encoder_in_openvino_matches_pytorch_at_any_batch_and_length(tiny_encoder, tiny_packed, padding_free, tmp_path):
    encoder = remove_padding(tiny_encoder) if padding_free else tiny_encoder
    runtime = openvino_sentence_encoder(encoder, tmp_path / "encoder.xml", example=tiny_packed)
    assert runtime.input_names == ["input_ids", "attention_mask"]
    for batch in (tiny_packed, _batch([7, 3, 12, 1], 12), _batch([4], 9, seed=1)):
        with torch.no_grad():
            expected = tiny_encoder(batch)
        actual = runtime(batch)
        assert actual.shape == expected.shape
        assert (actual - expected).abs().max().item() < 1e-4
        assert torch.allclose(actual.norm(dim=1), torch.ones(actual.shape[0]), atol=1e-4)  # normalised in the graph


@pytest.mark.slow  # NNCF calibration of a transformer
def test_int8_encoder_by_nncf_stays_close(tiny_encoder, tiny_packed, tmp_path):
    calibration = [_batch([9, 4, 12, 7], 12, seed=seed) for seed in range(3)] + [tiny_packed]
    runtime = openvino_sentence_encoder(
        tiny_encoder, tmp_path / "int8.xml", scheme="int8_static", calibration=calibration
    )
    assert 'type="FakeQuantize"' in runtime.path.read_text()
    with torch.no_grad():
        expected = tiny_encoder(tiny_packed)
    cosine = torch.nn.functional.cosine_similarity(runtime(tiny_packed), expected).min().item()
    assert cosine > 0.98


def test_export_format_openvino_writes_the_encoder_contract(tiny_encoder, tiny_packed, sentences, tmp_path):
    path = export(tiny_encoder, tmp_path / "model.xml", "openvino", tiny_packed)
    runtime = OpenVinoSentenceEncoder(path)
    ids, mask = unpack(tiny_packed)
    assert runtime.forward(ids, mask).shape == (len(sentences), tiny_encoder.embedding_dim)
    assert "sentence_embedding" in path.read_text()


def _pooled(model, token_embeddings: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The folder's own modules after the transformer (Pooling, Normalize), as sentence-transformers runs them."""
    features = {
        "token_embeddings": torch.from_numpy(token_embeddings),
        "attention_mask": torch.from_numpy(attention_mask),
    }
    for module in list(model)[1:]:
        features = module(features)
    return features["sentence_embedding"].numpy()


def test_sentence_transformers_folder_holds_graphs_where_the_backends_look(
    tiny_folder, tiny_encoder, tiny_packed, sentences, tmp_path
):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import onnxruntime
    from sentence_transformers.backend.utils import backend_should_export

    import openvino

    folder = export_sentence_transformers(tiny_encoder, tmp_path / "st", tiny_packed)
    for name in ("modules.json", "1_Pooling/config.json", "tokenizer.json", "config.json", "sentence_bert_config.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "model.safetensors").exists()
    for file_name, glob, backend in (
        ("model.onnx", "*.onnx", "ONNX"),
        ("openvino_model.xml", "openvino*.xml", "OpenVINO"),
    ):
        should_export, kwargs = backend_should_export(folder, True, {}, file_name, glob, backend)
        assert not should_export and kwargs["subfolder"] == str(
            ONNX_FILE.parent if backend == "ONNX" else OPENVINO_FILE.parent
        )

    reference = sentence_transformers.SentenceTransformer(str(tiny_folder), device="cpu")
    expected = reference.encode(sentences, convert_to_numpy=True)
    features = reference.tokenize(sentences)
    feeds = {name: features[name].numpy() for name in ("input_ids", "attention_mask", "token_type_ids")}
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    onnx_feeds = {item.name: feeds[item.name] for item in session.get_inputs()}
    assert session.get_outputs()[0].name == "last_hidden_state"
    (onnx_tokens,) = session.run(["last_hidden_state"], onnx_feeds)
    compiled = openvino.Core().compile_model(str(folder / OPENVINO_FILE), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    openvino_tokens = compiled({item.get_any_name(): feeds[item.get_any_name()] for item in compiled.inputs})[0]
    assert compiled.outputs[0].get_any_name() == "last_hidden_state"
    for tokens in (onnx_tokens, openvino_tokens):
        assert tokens.ndim == 3  # token embeddings, not the pooled sentence embedding
        assert np.abs(_pooled(reference, tokens, feeds["attention_mask"]) - expected).max() < 1e-4


@pytest.mark.slow  # NNCF calibration of a transformer
def test_sentence_transformers_folder_with_an_int8_openvino_graph(tiny_encoder, tiny_packed, tmp_path):
    folder = export_sentence_transformers(
        remove_padding(tiny_encoder),
        tmp_path / "st",
        tiny_packed,
        formats=("openvino",),
        openvino_int8_calibration=[tiny_packed],
    )
    assert (folder / OPENVINO_INT8_FILE).is_file() and not (folder / ONNX_FILE).exists()
    assert 'type="FakeQuantize"' in (folder / OPENVINO_INT8_FILE).read_text()


def test_sentence_transformers_export_needs_the_original_folder(tiny_encoder, tmp_path):
    from optiforge.encoders import SentenceEncoder

    orphan = SentenceEncoder(tiny_encoder.transformer, tiny_encoder.max_length)
    with pytest.raises(ModelError, match="modules.json"):
        export_sentence_transformers(orphan, tmp_path / "st")


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_sentence_transformers_loads_the_folder_with_its_backend(
    tiny_folder, tiny_encoder, tiny_packed, sentences, backend, tmp_path
):
    pytest.importorskip("optimum.onnxruntime" if backend == "onnx" else "optimum.intel")
    from sentence_transformers import SentenceTransformer

    folder = export_sentence_transformers(tiny_encoder, tmp_path / "st", tiny_packed)
    expected = SentenceTransformer(str(tiny_folder), device="cpu").encode(sentences)
    actual = SentenceTransformer(str(folder), backend=backend, device="cpu").encode(sentences)
    assert np.abs(actual - expected).max() < 1e-4


@pytest.mark.slow  # the real all-MiniLM-L6-v2: conversion, NNCF calibration and a sentence-transformers folder
def test_real_minilm_in_openvino_float_int8_and_as_a_sentence_transformers_folder(sentences, tmp_path):
    import onnxruntime
    from sentence_transformers import SentenceTransformer

    from optiforge.encoders import load_sentence_encoder
    from optiforge.encoders.loading import load_tokenizer, package_folder
    from optiforge.encoders.text import tokenize

    encoder = load_sentence_encoder()
    packed = tokenize(load_tokenizer(), sentences, encoder.max_length).packed
    with torch.no_grad():
        expected = encoder(packed)
    float_runtime = openvino_sentence_encoder(remove_padding(encoder), tmp_path / "float.xml", example=packed)
    assert (float_runtime(packed) - expected).abs().max().item() < 1e-4
    int8_runtime = openvino_sentence_encoder(encoder, tmp_path / "int8.xml", scheme="int8_static", calibration=[packed])
    assert torch.nn.functional.cosine_similarity(int8_runtime(packed), expected).min().item() > 0.99

    folder = export_sentence_transformers(encoder, tmp_path / "st", packed)
    reference = SentenceTransformer(str(package_folder()), device="cpu")
    features = reference.tokenize(sentences)
    feeds = {name: features[name].numpy() for name in ("input_ids", "attention_mask", "token_type_ids")}
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    (tokens,) = session.run(["last_hidden_state"], {item.name: feeds[item.name] for item in session.get_inputs()})
    encoded = reference.encode(sentences, convert_to_numpy=True)
    assert np.abs(_pooled(reference, tokens, feeds["attention_mask"]) - encoded).max() < 1e-4


def test_encoder_runtime_engine_openvino_runs_padding_free_and_matches_pytorch(tiny_encoder, tiny_packed, tmp_path):
    from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder_with_result

    config = EncoderRuntimeConfig(engine="openvino", quantize="none", remove_padding=True)
    result = optimize_encoder_with_result(tiny_encoder, config, [tiny_packed], path=tmp_path / "encoder.onnx")
    assert isinstance(result.model, OpenVinoSentenceEncoder) and result.model.path == tmp_path / "encoder.xml"
    assert (tmp_path / "encoder.bin").is_file() and not (tmp_path / "encoder.onnx").exists()
    with torch.no_grad():
        expected = tiny_encoder(tiny_packed)
    assert (result.model(tiny_packed) - expected).abs().max().item() < 1e-4


@pytest.mark.slow  # NNCF calibration of a transformer
def test_encoder_runtime_engine_openvino_int8_is_quantized_by_nncf(tiny_encoder, tiny_packed, tmp_path):
    from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder_with_result

    config = EncoderRuntimeConfig(engine="openvino", quantize="int8_static", remove_padding=True)
    calibration = [_batch([9, 4, 12, 7], 12, seed=seed) for seed in range(3)] + [tiny_packed]
    result = optimize_encoder_with_result(tiny_encoder, config, calibration, path=tmp_path / "encoder.onnx")
    assert 'type="FakeQuantize"' in result.model.path.read_text()
    with torch.no_grad():
        expected = tiny_encoder(tiny_packed)
    assert torch.nn.functional.cosine_similarity(result.model(tiny_packed), expected).min().item() > 0.98


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"quantize": "int8_dynamic"}, "int8_dynamic"),
        ({"quantize": "int8_static", "smoothing": {"alpha": 0.8}}, "smoothing"),
        ({"quantize": "int8_static", "layers": {"float_most_sensitive": 2}}, "layers"),
    ],
)
def test_encoder_runtime_engine_openvino_refuses_onnx_runtime_only_fields(fields, named):
    from optiforge.encoders.optimize import EncoderRuntimeConfig
    from optiforge.errors import ConfigError

    with pytest.raises(ConfigError, match=named):
        EncoderRuntimeConfig(engine="openvino", **fields)


def test_encoder_runtime_precision_auto_is_bf16_only_where_the_cpu_has_bf16_units(tiny_encoder, tiny_packed, tmp_path):
    from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder_with_result
    from optiforge.exporters.openvino import bf16_supported

    session = {"precision": "auto"}
    config = EncoderRuntimeConfig(engine="openvino", quantize="none", remove_padding=True, session=session)
    result = optimize_encoder_with_result(tiny_encoder, config, [tiny_packed], path=tmp_path / "encoder.onnx")
    expected = "bf16" if bf16_supported() else "f32"
    assert result.model.precision == expected and result.summary()["precision"] == expected
    with torch.no_grad():
        reference = tiny_encoder(tiny_packed)
    assert torch.nn.functional.cosine_similarity(result.model(tiny_packed), reference).min().item() > 0.999


def test_encoder_runtime_bf16_is_refused_where_it_cannot_run(tiny_encoder, tiny_packed, tmp_path):
    from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder_with_result
    from optiforge.errors import ConfigError
    from optiforge.exporters.openvino import bf16_supported

    with pytest.raises(ConfigError, match="session.precision 'bf16' is OpenVINO's"):
        EncoderRuntimeConfig(engine="onnxruntime", session={"precision": "bf16"})
    if bf16_supported():
        return
    config = EncoderRuntimeConfig(engine="openvino", quantize="none", session={"precision": "bf16"})
    with pytest.raises(ConfigError, match="bf16 units"):
        optimize_encoder_with_result(tiny_encoder, config, [tiny_packed], path=tmp_path / "encoder.onnx")
    assert not list(tmp_path.iterdir())  # refused before anything was converted


def test_an_openvino_encoder_exports_onnx_as_its_onnx_runtime_twin(tiny_encoder, tiny_packed, tmp_path):
    from optiforge.encoders.optimize import EncoderRuntimeConfig, optimize_encoder_with_result
    from optiforge.encoders.runtime import OnnxSentenceEncoder
    from optiforge.stages.encoder import _onnx_twin

    config = EncoderRuntimeConfig(engine="openvino", quantize="none", remove_padding=True)
    result = optimize_encoder_with_result(tiny_encoder, config, [tiny_packed], path=tmp_path / "encoder.onnx")
    with pytest.raises(ModelError, match=r"export: \[openvino\]"):  # the IR itself does not go back to ONNX
        export(result.model, tmp_path / "model.onnx", "onnx", tiny_packed)
    path = _onnx_twin(tiny_encoder, config, [tiny_packed])(tmp_path / "twin.onnx", tiny_packed)
    with torch.no_grad():
        reference = tiny_encoder(tiny_packed)
    assert (OnnxSentenceEncoder(path)(tiny_packed) - reference).abs().max().item() < 1e-4
