"""Image folders: one class per sub-folder, transforms done with PIL and torch, seeded splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_data import image_folder

from optiforge import DataConfig, build_data
from optiforge.data.images import IMAGENET, ImageTransform, parse_transforms
from optiforge.errors import ConfigError, DataError


def test_a_flat_folder_gives_classes_by_name_and_all_three_splits(tmp_path):
    root = image_folder(tmp_path / "shapes", classes=3, per_class=10)
    data = build_data(DataConfig(name="image_folder", path=str(root), test_fraction=0.2))
    assert data.num_classes == 3
    assert data.info["classes"] == ["class_0", "class_1", "class_2"]
    assert (len(data.train), len(data.val), len(data.test)) == (
        22,
        2,
        6,
    )  # test: 20% of 30; validation: 10% of the 24 left
    test_labels = sorted(int(data.test[index][1]) for index in range(len(data.test)))
    assert test_labels == [0, 0, 1, 1, 2, 2]  # stratified
    assert data.input_shape == (3, 12, 16)


def test_splits_are_seeded(tmp_path):
    root = image_folder(tmp_path / "shapes", classes=2, per_class=10)

    def test_files(seed: int) -> list[str]:
        data = build_data(DataConfig(name="image_folder", path=str(root), seed=seed))
        return [str(data.test.dataset.files[index]) for index in data.test.indices]

    assert test_files(0) == test_files(0)
    assert test_files(0) != test_files(1)


def test_train_and_test_folders_are_kept_as_given(tmp_path):
    image_folder(tmp_path / "set" / "train", classes=2, per_class=5)
    image_folder(tmp_path / "set" / "test", classes=2, per_class=3, seed=1)
    data = build_data(DataConfig(name="image_folder", path=str(tmp_path / "set"), val_fraction=0.2))
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 6)


def test_a_test_folder_with_an_unknown_class_is_refused(tmp_path):
    image_folder(tmp_path / "set" / "train", classes=2, per_class=2)
    image_folder(tmp_path / "set" / "test", classes=3, per_class=2)
    with pytest.raises(DataError, match="the test folder has classes the training folder lacks: \\['class_2'\\]"):
        build_data(DataConfig(name="image_folder", path=str(tmp_path / "set")))


def test_resize_keeps_the_aspect_ratio_and_crop_takes_the_centre():
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, 18:22] = 255  # a bright column in the middle
    image = Image.fromarray(pixels)
    resized = ImageTransform(parse_transforms({"resize": 10}), train=False)(image)
    assert resized.shape == (3, 10, 20)
    cropped = ImageTransform(parse_transforms({"resize": 10, "crop": 4}), train=False)(image)
    assert cropped.shape == (3, 4, 4)
    assert cropped[:, :, 1:3].min() > 0.5 > cropped[:, :, [0, 3]].max()  # the bright column sits in the middle


def test_imagenet_normalisation_uses_its_statistics():
    image = Image.fromarray(np.full((4, 4, 3), 255, dtype=np.uint8))
    pixels = ImageTransform(parse_transforms({"normalize": "imagenet"}), train=False)(image)
    expected = (1 - torch.tensor(IMAGENET["mean"])) / torch.tensor(IMAGENET["std"])
    assert torch.allclose(pixels[:, 0, 0], expected)
    custom = ImageTransform(parse_transforms({"normalize": {"mean": [0.5], "std": [0.25]}}), train=False)(image)
    assert torch.allclose(custom, torch.full((3, 4, 4), 2.0))


def test_augmentation_changes_training_images_only():
    pixels = np.zeros((8, 8, 3), dtype=np.uint8)
    pixels[:, :2] = 255  # bright on the left: a flip moves it right
    image = Image.fromarray(pixels)
    settings = parse_transforms({"augment": True, "crop": 6})
    torch.manual_seed(0)
    train_views = {tuple(ImageTransform(settings, train=True)(image).flatten().tolist()) for _ in range(20)}
    test_views = {tuple(ImageTransform(settings, train=False)(image).flatten().tolist()) for _ in range(5)}
    assert len(train_views) > 1 and len(test_views) == 1


def test_augmented_folders_evaluate_on_unaugmented_images(tmp_path):
    root = image_folder(tmp_path / "shapes", classes=2, per_class=5)
    data = build_data(DataConfig(name="image_folder", path=str(root), transforms={"augment": True, "crop": 8}))
    assert data.test.dataset.transform.train is False
    assert data.train.dataset.transform.train is True


def test_grey_images_give_one_channel(tmp_path):
    root = image_folder(tmp_path / "shapes", classes=2, per_class=3)
    data = build_data(DataConfig(name="image_folder", path=str(root), transforms={"channels": 1, "resize": [8, 8]}))
    assert data.input_shape == (1, 8, 8)


def test_transform_mistakes_are_named(tmp_path):
    root = image_folder(tmp_path / "shapes", classes=2, per_class=3)
    with pytest.raises(ConfigError, match="unknown field 'data.transforms.resise' \\(did you mean 'resize'\\?\\)"):
        build_data(DataConfig(name="image_folder", path=str(root), transforms={"resise": 8}))
    with pytest.raises(ConfigError, match="data.transforms.normalize"):
        build_data(DataConfig(name="image_folder", path=str(root), transforms={"normalize": "imagenett"}))
    with pytest.raises(DataError, match="data.transforms.crop: 40×40 is larger than the image \\(12×16\\)"):
        build_data(DataConfig(name="image_folder", path=str(root), transforms={"crop": 40}))


def test_a_folder_without_class_folders_is_refused(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="needs one sub-folder of images per class"):
        build_data(DataConfig(name="image_folder", path=str(tmp_path / "flat")))
    with pytest.raises(DataError, match="is not a folder"):
        build_data(DataConfig(name="image_folder", path=str(tmp_path / "none")))
