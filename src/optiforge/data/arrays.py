"""Feature arrays with labels: a CSV file (a label column) or an NPZ file (a features and a labels array)."""

from __future__ import annotations

import csv as csv_module
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from optiforge.data.builtin import DATASETS
from optiforge.data.splits import labelled_splits
from optiforge.errors import DataError


def _file(path: str, suffixes: tuple[str, ...]) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.path: no file '{file}'")
    if file.suffix.lower() not in suffixes:
        raise DataError(f"data.path: '{file.name}' is not a {' or '.join(suffixes)} file")
    return file


def _shaped(features: np.ndarray, shape: list[int] | None, where: str) -> np.ndarray:
    if shape is None:
        return features
    if int(np.prod(shape)) != int(np.prod(features.shape[1:])):
        raise DataError(
            f"{where}.shape: {list(shape)} holds {int(np.prod(shape))} values, each item has "
            f"{int(np.prod(features.shape[1:]))}"
        )
    return features.reshape(len(features), *shape)


def _splits_of(arrays: dict[str, tuple[np.ndarray, list]], shape, name: str, test_fraction, val_fraction, seed, info):
    """``arrays``: split → (features, raw labels); labels are named classes or indices across all splits."""

    def pool(split: str, rows: slice, labels: np.ndarray) -> TensorDataset:
        features = _shaped(np.asarray(arrays[split][0], dtype=np.float32), shape, "data")
        return TensorDataset(torch.from_numpy(features), torch.from_numpy(labels))

    raw_labels = {split: raw for split, (_, raw) in arrays.items()}
    return labelled_splits(
        raw_labels, pool, name=name, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed, info=info
    )


@DATASETS.register("csv")
def csv(
    path: str,
    label: str = "label",
    features: list[str] | None = None,
    shape: list[int] | None = None,
    delimiter: str = ",",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
):
    """A CSV file with a header: ``label`` names the class column, ``features`` the input columns (default: the rest).

    ``shape`` reshapes each row's features (``[1, 8, 8]`` for 64 pixel columns).
    """
    file = _file(path, (".csv", ".tsv", ".txt"))
    with file.open(newline="", encoding="utf-8") as handle:
        rows = list(csv_module.reader(handle, delimiter=delimiter))
    if len(rows) < 2:
        raise DataError(f"data.path: '{file.name}' needs a header row and at least one data row")
    header, body = [column.strip() for column in rows[0]], rows[1:]
    if label not in header:
        raise DataError(f"data.label: '{file.name}' has no column '{label}'; its columns: {', '.join(header)}")
    columns = features or [column for column in header if column != label]
    missing = [column for column in columns if column not in header]
    if missing:
        raise DataError(f"data.features: '{file.name}' has no columns {missing}; its columns: {', '.join(header)}")
    positions = [header.index(column) for column in columns]
    values = np.empty((len(body), len(columns)), dtype=np.float32)
    for row_number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(
                f"data.path: '{file.name}' line {row_number} has {len(row)} fields, the header {len(header)}"
            )
        for column_number, position in enumerate(positions):
            try:
                values[row_number - 2, column_number] = float(row[position])
            except ValueError:
                raise DataError(
                    f"data.path: '{file.name}' line {row_number}, column '{columns[column_number]}': "
                    f"'{row[position]}' is not a number"
                ) from None
    labels = [row[header.index(label)].strip() for row in body]
    info = {"file": str(file), "features": columns}
    return _splits_of({"train": (values, labels)}, shape, file.stem, test_fraction, val_fraction, seed, info)


@DATASETS.register("npz")
def npz(
    path: str,
    features: str = "x",
    labels: str = "y",
    shape: list[int] | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
):
    """An NPZ file holding a ``features`` array ``(items, ...)`` and a ``labels`` array ``(items,)``.

    Given splits are read as ``x_train``/``y_train``, ``x_val``/``y_val``, ``x_test``/``y_test``
    (with the configured names); the others are cut from the training arrays.
    """
    file = _file(path, (".npz",))
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"data.path: '{file.name}' is not a readable NPZ file ({error})") from None
    with archive:
        names = list(archive.files)
        arrays = {}
        for split, suffix in (("train", ""), ("train", "_train"), ("val", "_val"), ("test", "_test")):
            if f"{features}{suffix}" in names and split not in arrays:
                if f"{labels}{suffix}" not in names:
                    raise DataError(f"data.labels: '{file.name}' has '{features}{suffix}' but no '{labels}{suffix}'")
                inputs, targets = archive[f"{features}{suffix}"], archive[f"{labels}{suffix}"]
                if len(inputs) != len(targets) or targets.ndim != 1:
                    raise DataError(
                        f"data: '{file.name}' has {len(inputs)} items in '{features}{suffix}' and labels of "
                        f"shape {targets.shape} in '{labels}{suffix}' (expected ({len(inputs)},))"
                    )
                arrays[split] = (inputs, targets.tolist())
    if "train" not in arrays:
        raise DataError(
            f"data.features: '{file.name}' has no array '{features}' or '{features}_train'; "
            f"its arrays: {', '.join(names)}"
        )
    info = {"file": str(file)}
    return _splits_of(arrays, shape, file.stem, test_fraction, val_fraction, seed, info)
