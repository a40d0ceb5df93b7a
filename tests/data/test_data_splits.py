"""Splits of labelled pools: classes read across every split, each pool given its own rows and labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from optiforge.data.splits import labelled_splits
from optiforge.data.text import text_splits
from optiforge.errors import DataError


def test_class_names_are_one_set_across_splits_and_each_pool_gets_its_rows():
    raw_labels = {"train": ["dog", "cat", "dog", "cat", "dog", "cat"], "test": ["emu", "cat"]}
    features = torch.arange(8, dtype=torch.float32).unsqueeze(1)
    seen = {}

    def pool(split, rows, labels):
        seen[split] = (rows, labels.tolist())
        return TensorDataset(features[rows], torch.from_numpy(labels))

    data = labelled_splits(raw_labels, pool, name="pets", test_fraction=0.2, val_fraction=0.0, seed=0)
    assert data.info["classes"] == ["cat", "dog", "emu"] and data.num_classes == 3
    assert seen == {"train": (slice(0, 6), [1, 0, 1, 0, 1, 0]), "test": (slice(6, 8), [2, 0])}
    assert [float(data.test[index][0]) for index in range(len(data.test))] == [6.0, 7.0]
    assert data.info["items"] == {"train": 6, "val": 0, "test": 2}


def test_labels_are_read_before_any_pool_is_built():
    def pool(split, rows, labels):
        raise AssertionError("no pool is built for data without labels")

    with pytest.raises(DataError, match="there are no labels"):
        labelled_splits({"train": []}, pool, name="empty", test_fraction=0.2, val_fraction=0.1, seed=0)


def test_text_without_labels_is_refused_before_the_tokenizer_is_loaded(tmp_path):
    with pytest.raises(DataError, match=r"data \(empty\): there are no labels"):
        text_splits({"train": ([], [])}, str(tmp_path / "no-tokenizer"), None, "empty", 0.2, 0.1, 0, {})


def test_each_split_keeps_its_labels_as_class_indices():
    raw_labels = {"train": [0, 1, 0, 1, 0, 1, 0, 1, 0, 1], "val": [1, 0]}
    data = labelled_splits(
        raw_labels,
        lambda split, rows, labels: TensorDataset(torch.zeros(len(labels), 2), torch.from_numpy(labels)),
        name="numbers",
        test_fraction=0.2,
        val_fraction=0.5,
        seed=0,
    )
    assert data.info["classes"] is None and data.num_classes == 2
    assert [int(data.val[index][1]) for index in range(len(data.val))] == [1, 0]
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 2)
    assert np.bincount([int(data.test[index][1]) for index in range(len(data.test))]).tolist() == [1, 1]
