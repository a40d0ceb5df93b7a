"""A tiny sentence-transformers folder: MiniLM's tokenizer and configs around a 2-layer, 32-wide BERT."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

SENTENCES = [
    "The assert statement inserts debugging assertions into a program.",
    "A short sentence.",
    "Dictionaries map hashable keys to arbitrary values.",
    "Exceptions can be chained explicitly with the from clause.",
    "Lists are mutable sequences.",
]
MAX_LENGTH = 32


@pytest.fixture(scope="session")
def sentences() -> list[str]:
    return list(SENTENCES)


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def tiny_encoder(tiny_folder):
    from optiforge.encoders import load_sentence_encoder

    return load_sentence_encoder(tiny_folder)


@pytest.fixture(scope="session")
def tiny_packed(tiny_folder, tiny_encoder):
    from optiforge.encoders.loading import load_tokenizer
    from optiforge.encoders.text import tokenize

    return tokenize(load_tokenizer(tiny_folder), SENTENCES, tiny_encoder.max_length).packed
