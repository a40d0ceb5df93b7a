"""Each data source runs a recipe end to end, and data that does not fit the model is refused before training."""

from __future__ import annotations

import pytest
from small_runs import run_small
from tiny_data import csv_file, image_folder, npz_file, saved_text_dataset, tokenizer_folder
from tiny_models import hf_folder, onnx_convnet, onnx_mlp

from optiforge.errors import DataError


def test_a_csv_trains_the_builtin_mlp(tmp_path):
    report = run_small(
        {"name": "csv", "path": str(csv_file(tmp_path / "a.csv", count=60)), "label": "species"},
        {"name": "mlp", "hidden": [16]},
        tmp_path / "run",
        train={"batch_size": 8, "optimizer": {"name": "adam", "lr": 0.05}},
    )
    (train,) = report["stages"]
    assert train["value"] > 0.5  # three well-separated classes: one epoch beats chance (1/3)


def test_a_saved_text_dataset_trains_a_hugging_face_classifier(tmp_path):
    report = run_small(
        {
            "name": "hf_dataset",
            "path": str(saved_text_dataset(tmp_path / "saved")),
            "tokenizer": str(tokenizer_folder(tmp_path / "tokenizer")),
        },
        {"huggingface": str(hf_folder(tmp_path / "bert", "bert"))},
        tmp_path / "run",
    )
    (train,) = report["stages"]
    assert train["metric"] == "accuracy"


def test_images_of_other_channels_than_the_model_takes_are_refused_before_training(tmp_path):
    images = image_folder(tmp_path / "images", classes=3, per_class=4)
    with pytest.raises(
        DataError, match="takes inputs of shape \\(batch, 1, 8, 8\\), the data gives \\(batch, 3, 8, 8\\)"
    ):
        run_small(
            {"name": "image_folder", "path": str(images), "transforms": {"resize": 8, "crop": 8}},
            {"onnx": str(onnx_convnet(tmp_path / "convnet.onnx", channels=1, size=8, classes=3))},
            tmp_path / "run",
        )
    assert not (tmp_path / "run" / "train").exists()


def test_a_model_with_other_classes_than_the_data_is_refused_before_training(tmp_path):
    with pytest.raises(DataError, match="outputs of shape \\(2, 10\\), the data has 3 classes"):
        run_small(
            {"name": "npz", "path": str(npz_file(tmp_path / "a.npz", count=30, features=64))},
            {"onnx": str(onnx_mlp(tmp_path / "mlp.onnx", features=64, classes=10))},
            tmp_path / "run",
        )
