"""Tiny data in files, written the way users keep theirs: PNG folders, CSV, NPZ, text, saved datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = {
    "sport": ["match", "goal", "team", "score", "league", "coach"],
    "food": ["bread", "soup", "cheese", "apple", "recipe", "salad"],
}


def image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 12, seed: int = 0) -> Path:
    """``root/class_k/i.png``: class k's images are brightest in the k-th band of rows."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            pixels = rng.integers(0, 60, (size, size + 4, 3)).astype(np.uint8)  # not square: resize is exercised
            band = size // classes
            pixels[label * band : (label + 1) * band] += 180
            Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


def separable_arrays(count: int = 60, features: int = 8, classes: int = 3, seed: int = 0):
    """Features whose class is the feature with the largest mean shift."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    values = rng.normal(0, 0.3, (count, features)).astype(np.float32)
    values[np.arange(count), labels] += 2.0
    return values, labels


def npz_file(path: Path, **kwargs) -> Path:
    values, labels = separable_arrays(**kwargs)
    np.savez(path, x=values, y=labels)
    return path


def csv_file(path: Path, **kwargs) -> Path:
    values, labels = separable_arrays(**kwargs)
    names = ["ant", "bee", "cat"]
    header = ",".join(f"f{index}" for index in range(values.shape[1])) + ",species"
    rows = [
        ",".join(f"{value:.4f}" for value in row) + f",{names[label]}"
        for row, label in zip(values, labels, strict=True)
    ]
    lines = [header, *rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def labelled_lines(count: int = 40, seed: int = 0) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    lines = []
    for index in range(count):
        label = list(WORDS)[index % 2]
        words = rng.choice(WORDS[label], size=5)
        lines.append((label, "the " + " ".join(words)))
    return lines


def text_file(path: Path, **kwargs) -> Path:
    path.write_text("".join(f"{label}\t{text}\n" for label, text in labelled_lines(**kwargs)))
    return path


def tokenizer_folder(folder: Path) -> Path:
    """A word-level tokenizer for the words above (ids below 60, for the tiny models), saved with save_pretrained."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the"] + [word for words in WORDS.values() for word in words]
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(vocabulary)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    wrapped = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=32,
    )
    wrapped.save_pretrained(str(folder))
    return folder


def saved_text_dataset(folder: Path, **kwargs) -> Path:
    """A DatasetDict with train and test splits of labelled text, the label a ClassLabel."""
    import datasets

    lines = labelled_lines(**kwargs)
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(WORDS))})
    table = {"text": [text for _, text in lines], "label": [list(WORDS).index(label) for label, _ in lines]}
    dataset = datasets.Dataset.from_dict(table, features=features).train_test_split(test_size=0.25, seed=0)
    dataset.save_to_disk(str(folder))
    return folder


def saved_numeric_dataset(folder: Path, **kwargs) -> Path:
    import datasets

    values, labels = separable_arrays(**kwargs)
    datasets.Dataset.from_dict({"features": values.tolist(), "label": labels.tolist()}).save_to_disk(str(folder))
    return folder
