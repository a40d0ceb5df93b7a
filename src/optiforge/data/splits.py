"""Train, validation and test splits for data read from files, and class names for their labels.

A source gives the splits it has (an image folder with ``train/`` and ``test/``
sub-folders, a saved dataset with a ``test`` split); the rest are cut from the
training data (``test_fraction`` first, then ``val_fraction`` of what is left), stratified by class
where every class has enough members, with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from optiforge.data.builtin import TaskData
from optiforge.errors import DataError

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}


def class_indices(labels: Sequence, where: str) -> tuple[np.ndarray, list[str] | None]:
    """Labels as class indices, and the class names when the labels are names (sorted, so runs agree).

    Whole numbers are indices already; anything else is a class name.
    """
    values = list(labels)
    if not values:
        raise DataError(f"{where}: there are no labels")
    try:
        numbers = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        numbers = None
    if numbers is not None and np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers)):
        if numbers.min() < 0:
            raise DataError(f"{where}: class labels must be 0 or more, found {int(numbers.min())}")
        return numbers.astype(np.int64), None
    names = sorted({str(value) for value in values})
    lookup = {name: index for index, name in enumerate(names)}
    return np.asarray([lookup[str(value)] for value in values], dtype=np.int64), names


def _cut(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``indices`` split into (kept, cut off), the cut a ``fraction`` of them, stratified when it can be."""
    count = int(round(len(indices) * fraction))
    if count == 0:
        return indices, indices[:0]
    from sklearn.model_selection import train_test_split

    classes, members = np.unique(labels[indices], return_counts=True)
    stratify = labels[indices] if members.min() >= 2 and count >= len(classes) else None
    kept, cut = train_test_split(indices, test_size=count, random_state=seed, stratify=stratify)
    return np.sort(kept), np.sort(cut)


def split_indices(
    labels: np.ndarray, test_fraction: float, val_fraction: float, seed: int, has_test: bool = False
) -> dict[str, np.ndarray]:
    """Indices of train/val(/test) within one pool of labelled items."""
    indices = np.arange(len(labels))
    splits = {}
    if not has_test:
        indices, splits["test"] = _cut(indices, labels, test_fraction, seed)
    splits["train"], splits["val"] = _cut(indices, labels, val_fraction, seed)
    return splits


def check_fractions(test_fraction: float) -> None:
    if not 0.0 <= test_fraction < 0.9:
        raise DataError(f"data.test_fraction: {test_fraction} is outside 0 ≤ fraction < 0.9")


def assemble(
    pools: dict[str, Dataset],
    labels: dict[str, np.ndarray],
    *,
    name: str,
    classes: list[str] | None,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    info: dict | None = None,
) -> TaskData:
    """TaskData from the splits a source has (``train`` at least), the others cut from ``train``.

    ``labels`` holds each pool's class indices, so counting classes never reads the items.
    """
    check_fractions(test_fraction)
    if "train" not in pools:
        raise DataError(f"data: '{name}' has no training split (found {', '.join(pools) or 'none'})")
    train_labels = labels["train"]
    cuts = split_indices(
        train_labels, test_fraction, val_fraction if "val" not in pools else 0.0, seed, has_test="test" in pools
    )
    splits: dict[str, Dataset] = {"train": Subset(pools["train"], cuts["train"].tolist())}
    for split in ("val", "test"):
        splits[split] = pools[split] if split in pools else Subset(pools["train"], cuts[split].tolist())
    for split in ("train", "test"):
        if len(splits[split]) == 0:
            raise DataError(f"data: the {split} split of '{name}' is empty; give more items or a larger fraction")
    num_classes = len(classes) if classes else int(max(int(values.max()) for values in labels.values()) + 1)
    for split, values in labels.items():
        if len(values) and int(values.max()) >= num_classes:
            raise DataError(
                f"data: the {split} split of '{name}' has label {int(values.max())}, the training data "
                f"{num_classes} classes ({', '.join(classes or [])})"
            )
    sample = splits["train"][0][0]
    if not isinstance(sample, torch.Tensor):
        raise DataError(f"data: '{name}' items must be tensors, got {type(sample).__name__}")
    counts = {split: len(dataset) for split, dataset in splits.items()}
    return TaskData(
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        input_shape=tuple(sample.shape),
        num_classes=num_classes,
        name=name,
        info={"classes": classes, "items": counts, **(info or {})},
    )


def labelled_splits(
    raw_labels: dict[str, Sequence],
    pool: Callable[[str, slice, np.ndarray], Dataset],
    *,
    name: str,
    test_fraction: float,
    val_fraction: float,
    seed: int,
    info: dict | None = None,
) -> TaskData:
    """TaskData from each split's raw labels and ``pool(split, rows, labels)``, that split's dataset.

    The labels of all splits are read as one set of classes (:func:`class_indices`); ``rows`` is where the
    split's items stand when every split's items are laid one after another, ``labels`` their class indices.
    """
    every_label = [label for labels in raw_labels.values() for label in labels]
    indices, classes = class_indices(every_label, f"data ({name})")
    pools, labels, start = {}, {}, 0
    for split, raw in raw_labels.items():
        rows = slice(start, start + len(raw))
        labels[split] = np.asarray(indices[rows])
        pools[split] = pool(split, rows, labels[split])
        start = rows.stop
    return assemble(
        pools,
        labels,
        name=name,
        classes=classes,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        info=info,
    )
