"""Fixtures for the sentence-encoder tests: one model load per session, few short sentences."""

from __future__ import annotations

import pytest

SENTENCES = [
    "The assert statement inserts debugging assertions into a program.",
    "A short sentence.",
    "Dictionaries map hashable keys to arbitrary values.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Exceptions can be chained explicitly with the from clause.",
    "Lists are mutable sequences, typically used to store collections of homogeneous items.",
]


@pytest.fixture(scope="session")
def encoder():
    from optiforge.encoders import load_sentence_encoder

    return load_sentence_encoder()


@pytest.fixture(scope="session")
def tokenizer():
    from optiforge.encoders.loading import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def packed(tokenizer, encoder):
    from optiforge.encoders.text import tokenize

    return tokenize(tokenizer, SENTENCES, encoder.max_length).packed
