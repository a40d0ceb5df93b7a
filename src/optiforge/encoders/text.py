"""Sentences → packed token tensors, truncated to what the model allows."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from optiforge.encoders.module import pack
from optiforge.errors import DataError

log = logging.getLogger("optiforge")


@dataclass
class Tokenized:
    """Packed ``(count, 2, longest)`` int64 tokens and how many sentences were cut."""

    packed: torch.Tensor
    truncated: int
    longest_tokens: int


def tokenize(tokenizer, sentences: Sequence[str], max_length: int, where: str = "data") -> Tokenized:
    """Tokenize with padding to the longest sentence and truncation at ``max_length`` tokens.

    Sentences longer than the model allows are cut (as sentence-transformers
    does) and a warning says how many.
    """
    if not sentences:
        raise DataError(f"{where}: there are no sentences to tokenize")
    full_lengths = [len(ids) for ids in tokenizer(list(sentences), add_special_tokens=True)["input_ids"]]
    truncated = sum(length > max_length for length in full_lengths)
    if truncated:
        log.warning(
            "%s: %d of %d sentences are longer than the model's %d tokens and were truncated",
            where,
            truncated,
            len(sentences),
            max_length,
        )
    encoded = tokenizer(list(sentences), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    packed = pack(encoded["input_ids"], encoded["attention_mask"])
    return Tokenized(packed=packed, truncated=truncated, longest_tokens=min(max(full_lengths), max_length))


def batches_of(packed: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches of a packed tensor (the last may be smaller)."""
    return [packed[start : start + batch_size] for start in range(0, packed.shape[0], batch_size)]
