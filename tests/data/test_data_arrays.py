"""CSV and NPZ files: features and labels, class names kept, splits given or cut, mistakes named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_data import csv_file, npz_file, separable_arrays

from optiforge import DataConfig, build_data
from optiforge.errors import ConfigError, DataError


def test_an_npz_gives_float_features_class_indices_and_three_splits(tmp_path):
    values, labels = separable_arrays(count=60)
    data = build_data(DataConfig(name="npz", path=str(npz_file(tmp_path / "a.npz", count=60))))
    assert data.input_shape == (8,) and data.num_classes == 3
    assert (len(data.train), len(data.val), len(data.test)) == (43, 5, 12)
    inputs, label = data.test[0]
    row = int(data.test.indices[0])
    assert inputs.dtype == torch.float32 and torch.equal(inputs, torch.from_numpy(values[row]))
    assert int(label) == labels[row]


def test_npz_splits_given_in_the_file_are_kept(tmp_path):
    values, labels = separable_arrays(count=30)
    np.savez(tmp_path / "s.npz", x_train=values[:20], y_train=labels[:20], x_test=values[20:], y_test=labels[20:])
    data = build_data(DataConfig(name="npz", path=str(tmp_path / "s.npz"), val_fraction=0.2))
    assert (len(data.train), len(data.val), len(data.test)) == (16, 4, 10)
    assert torch.equal(data.test[0][0], torch.from_numpy(values[20]))


def test_npz_features_reshape_to_images(tmp_path):
    values, labels = separable_arrays(count=20, features=16)
    np.savez(tmp_path / "img.npz", pixels=values, classes=labels)
    data = build_data(
        DataConfig(name="npz", path=str(tmp_path / "img.npz"), features="pixels", labels="classes", shape=[1, 4, 4])
    )
    assert data.input_shape == (1, 4, 4)
    with pytest.raises(DataError, match="data.shape: \\[1, 3, 3\\] holds 9 values, each item has 16"):
        build_data(
            DataConfig(name="npz", path=str(tmp_path / "img.npz"), features="pixels", labels="classes", shape=[1, 3, 3])
        )


def test_npz_mistakes_name_the_arrays(tmp_path):
    values, labels = separable_arrays(count=10)
    np.savez(tmp_path / "a.npz", inputs=values, y=labels)
    with pytest.raises(DataError, match="no array 'x' or 'x_train'; its arrays: inputs, y"):
        build_data(DataConfig(name="npz", path=str(tmp_path / "a.npz")))
    np.savez(tmp_path / "b.npz", x=values, y=labels[:5])
    with pytest.raises(DataError, match="10 items in 'x' and labels of shape \\(5,\\)"):
        build_data(DataConfig(name="npz", path=str(tmp_path / "b.npz")))


def test_a_csv_reads_feature_columns_and_names_classes(tmp_path):
    path = csv_file(tmp_path / "animals.csv", count=30)
    data = build_data(DataConfig(name="csv", path=str(path), label="species"))
    assert data.info["classes"] == ["ant", "bee", "cat"]
    assert data.input_shape == (8,) and data.num_classes == 3
    chosen = build_data(DataConfig(name="csv", path=str(path), label="species", features=["f0", "f1"]))
    assert chosen.input_shape == (2,)


def test_csv_mistakes_name_the_line_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b,label\n1,2,0\n3,x,1\n")
    with pytest.raises(DataError, match="'bad.csv' line 3, column 'b': 'x' is not a number"):
        build_data(DataConfig(name="csv", path=str(path)))
    with pytest.raises(DataError, match="has no column 'kind'; its columns: a, b, label"):
        build_data(DataConfig(name="csv", path=str(path), label="kind"))
    with pytest.raises(ConfigError, match="unknown field 'data.lable' \\(did you mean 'label'\\?\\)"):
        build_data(DataConfig(name="csv", path=str(path), lable="label"))


def test_too_few_items_for_a_test_split_is_refused(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("a,label\n1,0\n2,1\n")
    with pytest.raises(DataError, match="the test split of 'two' is empty"):
        build_data(DataConfig(name="csv", path=str(path)))
