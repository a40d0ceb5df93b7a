"""A Hugging Face ``datasets`` dataset saved with ``save_to_disk``, read offline with ``load_from_disk``.

The input column decides how items become tensors: text is tokenised (as
labelled text files are), images go through the image transforms, numbers
become float tensors.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from optiforge.data.builtin import DATASETS
from optiforge.data.images import ImageTransform, parse_transforms
from optiforge.data.splits import SPLIT_NAMES, labelled_splits
from optiforge.data.text import text_splits
from optiforge.errors import DataError
from optiforge.imports import optional_import

INPUT_COLUMNS = ("text", "sentence", "image", "img", "pixel_values", "features", "x")


class ImageColumn(Dataset):
    """Images of a dataset column (PIL images or encoded bytes) through the image transform."""

    def __init__(self, images, labels: np.ndarray, transform: ImageTransform) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = self.images[index]
        if isinstance(image, dict):  # undecoded: {"bytes": ..., "path": ...}
            image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else Image.open(image["path"])
        return self.transform(image), int(self.labels[index])


def _split_tables(loaded) -> dict:
    if hasattr(loaded, "column_names") and isinstance(loaded.column_names, list):
        return {"train": loaded}
    tables = {}
    for name, table in loaded.items():
        if name.lower() not in SPLIT_NAMES:
            raise DataError(f"data.path: the saved dataset has a split '{name}'; known: train, validation, test")
        tables[SPLIT_NAMES[name.lower()]] = table
    return tables


def _kind(feature) -> str:
    kind = type(feature).__name__
    if kind == "Image":
        return "image"
    if kind == "Value" and feature.dtype in ("string", "large_string"):
        return "text"
    return "numbers"


@DATASETS.register("hf_dataset")
def hf_dataset(
    path: str,
    input: str | None = None,  # noqa: A002  the column's role, as the recipe names it
    label: str = "label",
    tokenizer: str | None = None,
    max_length: int | None = None,
    transforms: dict | None = None,
    shape: list[int] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
):
    """A dataset saved with ``save_to_disk`` (one table, or train/validation/test splits).

    ``input`` names the input column (default: the first of text, sentence, image, img, pixel_values,
    features, x); ``label`` the class column. Text columns use ``tokenizer``/``max_length``, image
    columns ``transforms``, numeric columns ``shape``.
    """
    datasets = optional_import("datasets", "data hf_dataset")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path: '{folder}' is not a folder")
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as error:
        raise DataError(f"data.path: '{folder}' is not a dataset saved with save_to_disk ({error})") from None
    tables = _split_tables(loaded)
    if "train" not in tables:
        raise DataError(f"data.path: the saved dataset has no train split (found {', '.join(tables)})")
    features = tables["train"].features
    column = input or next((name for name in INPUT_COLUMNS if name in features), None)
    if column is None or column not in features:
        raise DataError(f"data.input: no input column {column!r}; the dataset's columns: {', '.join(features)}")
    if label not in features:
        raise DataError(f"data.label: no column '{label}'; the dataset's columns: {', '.join(features)}")
    label_feature = features[label]
    names = list(label_feature.names) if type(label_feature).__name__ == "ClassLabel" else None
    raw = {split: list(table[label]) for split, table in tables.items()}
    kind = _kind(features[column])
    info = {"folder": str(folder), "input": column, "kind": kind}
    name = folder.name
    if names is not None:
        info["classes"] = names
    if kind == "text":
        texts = {split: (list(table[column]), raw[split]) for split, table in tables.items()}
        data = text_splits(texts, tokenizer, max_length, name, test_fraction, val_fraction, seed, info)
    else:

        def pool(split: str, rows: slice, labels: np.ndarray) -> Dataset:
            table = tables[split]
            if kind == "image":
                transform = ImageTransform(parse_transforms(transforms), train=split == "train")
                return ImageColumn(table[column], labels, transform)
            values = np.asarray(table.with_format("numpy")[column], dtype=np.float32)
            if shape is not None:
                values = values.reshape(len(values), *shape)
            return TensorDataset(torch.from_numpy(values), torch.from_numpy(labels))

        data = labelled_splits(
            raw, pool, name=name, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, info=info
        )
    if names is not None:
        data.info["classes"] = names
        data.num_classes = max(data.num_classes, len(names))
    return data
