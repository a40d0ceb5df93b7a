"""The ``sentences`` dataset: real text, user files, truncation and clear errors."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import SENTENCES
from optiforge.encoders.sentences import documentation_sentences, read_sentences, split_sentences
from optiforge.encoders.text import tokenize
from optiforge.errors import DataError


def test_documentation_sentences_are_prose():
    sentences = documentation_sentences()
    assert len(sentences) > 1500
    assert len(set(sentences)) == len(sentences)
    assert all(sentence[0].isupper() and 6 <= len(sentence.split()) <= 80 for sentence in sentences)
    assert not any("::=" in sentence or sentence.startswith(">>>") for sentence in sentences)


def test_split_is_disjoint_and_reproducible():
    sentences = [f"Sentence number {index} is here." for index in range(100)]
    train, val, test = split_sentences(sentences, eval_size=20, val_size=10, seed=0)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert not set(train) & set(test) and not set(val) & set(test)
    assert split_sentences(sentences, 20, 10, 0) == (train, val, test)
    assert split_sentences(sentences, 20, 10, 1) != (train, val, test)


def test_text_file_errors_name_the_problem(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="has no sentences"):
        read_sentences(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\xe9 au lait is served.\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_sentences(latin)
    with pytest.raises(DataError, match="no file"):
        read_sentences(tmp_path / "missing.txt")
    good = tmp_path / "good.txt"
    good.write_text("\ufeffFirst line.\n\nSecond line.\n", encoding="utf-8")
    assert read_sentences(good) == ["First line.", "Second line."]


def test_long_sentences_are_truncated_with_a_warning(tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="optiforge"):
        tokens = tokenize(tokenizer, SENTENCES, max_length=8)
    assert tokens.packed.shape == (len(SENTENCES), 2, 8)
    assert tokens.truncated == len(SENTENCES) - 1  # only "A short sentence." fits in 8 tokens
    assert "truncated" in caplog.text
    assert tokens.packed[:, 0, -1].tolist().count(102) == tokens.truncated  # [SEP] kept at the cut


def test_user_text_file_builds_embedding_data(tmp_path):
    import optiforge

    path = tmp_path / "mine.txt"
    path.write_text("\n".join(SENTENCES), encoding="utf-8")
    data = optiforge.build_data(optiforge.DataConfig(name="sentences", text_file=str(path), eval_size=2, val_size=1))
    assert data.task == "embedding"
    assert (len(data.train), len(data.val), len(data.test)) == (3, 1, 2)
    inputs, targets = data.test[0]
    assert inputs.shape[0] == 2 and inputs.dtype == torch.long
    assert targets.shape == (384,) and abs(float(targets.norm()) - 1.0) < 1e-5


def test_max_length_above_the_model_limit_is_refused(tmp_path):
    import optiforge

    path = tmp_path / "mine.txt"
    path.write_text("\n".join(SENTENCES), encoding="utf-8")
    with pytest.raises(DataError, match="more than the model allows"):
        optiforge.build_data(optiforge.DataConfig(name="sentences", text_file=str(path), max_length=1000))
