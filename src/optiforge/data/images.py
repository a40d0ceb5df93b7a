"""An image folder (one sub-folder per class) read lazily, with resize, crop, normalise and augment.

The transforms are PIL and torch operations, so image data needs Pillow, not
torchvision. Augmentation (random crop and horizontal flip) applies to the
training split only; validation and test images are centre-cropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationError
from torch.utils.data import Dataset

from optiforge.config import Config, describe_validation_error
from optiforge.data.builtin import DATASETS
from optiforge.data.splits import SPLIT_NAMES, assemble
from optiforge.errors import ConfigError, DataError
from optiforge.imports import optional_import

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# the statistics torchvision's ImageNet weights were trained with
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


class Normalization(Config):
    """Per-channel mean and standard deviation of pixel values in [0, 1]."""

    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)


class ImageTransforms(Config):
    """``resize`` the shorter side (or to ``[height, width]``), ``crop`` the centre, scale to [0, 1], normalise."""

    resize: int | tuple[int, int] | None = Field(None, description="shorter side in pixels, or [height, width]")
    crop: int | tuple[int, int] | None = Field(None, description="centre crop (random when augmenting)")
    normalize: Literal["imagenet", "none"] | Normalization = "none"
    augment: bool = Field(False, description="training split: random crop and horizontal flip")
    channels: Literal[1, 3] = 3

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.normalize == "none":
            return None
        values = IMAGENET if self.normalize == "imagenet" else self.normalize.model_dump()
        mean, std = torch.tensor(values["mean"]), torch.tensor(values["std"])
        if len(mean) not in (1, self.channels) or len(std) != len(mean):
            raise ConfigError(
                f"data.transforms.normalize: {len(mean)} means and {len(std)} standard deviations "
                f"for {self.channels}-channel images"
            )
        return mean.view(-1, 1, 1), std.view(-1, 1, 1)


def parse_transforms(transforms: dict | ImageTransforms | None) -> ImageTransforms:
    if isinstance(transforms, ImageTransforms):
        return transforms
    try:
        return ImageTransforms.model_validate(transforms or {})
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, ImageTransforms, "data.transforms")) from None


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ImageTransform:
    """PIL image → ``(channels, height, width)`` float tensor, as :class:`ImageTransforms` describes."""

    def __init__(self, transforms: ImageTransforms, train: bool) -> None:
        self.transforms = transforms
        self.train = train
        self.statistics = transforms.statistics()

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        settings = self.transforms
        image = image.convert("L" if settings.channels == 1 else "RGB")
        if settings.resize is not None:
            if isinstance(settings.resize, int):  # the shorter side, keeping the aspect ratio
                scale = settings.resize / min(image.size)
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            else:
                size = (settings.resize[1], settings.resize[0])
            image = image.resize(size, Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        pixels = pixels.unsqueeze(0) if pixels.dim() == 2 else pixels.permute(2, 0, 1)  # (C, H, W)
        if settings.crop is not None:
            pixels = self._crop(pixels, *_pair(settings.crop))
        if settings.augment and self.train and torch.rand(()) < 0.5:
            pixels = pixels.flip(-1)
        if self.statistics is not None:
            mean, std = self.statistics
            pixels = (pixels - mean) / std
        return pixels.contiguous()

    def _crop(self, pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        _, full_height, full_width = pixels.shape
        if height > full_height or width > full_width:
            raise DataError(
                f"data.transforms.crop: {height}×{width} is larger than the image ({full_height}×{full_width}); "
                "resize first"
            )
        if self.transforms.augment and self.train:
            top = int(torch.randint(0, full_height - height + 1, ()))
            left = int(torch.randint(0, full_width - width + 1, ()))
        else:
            top, left = (full_height - height) // 2, (full_width - width) // 2
        return pixels[:, top : top + height, left : left + width]


class ImageFiles(Dataset):
    """``(image tensor, class index)`` pairs read from files when asked for."""

    def __init__(self, files: list[Path], labels: np.ndarray, transform: ImageTransform) -> None:
        self.files = files
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path = self.files[index]
        try:
            with Image.open(path) as image:
                pixels = self.transform(image)
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"data: cannot read the image '{path}' ({type(error).__name__})") from None
        return pixels, int(self.labels[index])


def _class_folders(folder: Path) -> dict[str, list[Path]]:
    classes = {}
    for sub_folder in sorted(path for path in folder.iterdir() if path.is_dir()):
        files = sorted(path for path in sub_folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            classes[sub_folder.name] = files
    return classes


def image_pools(root: Path) -> dict[str, dict[str, list[Path]]]:
    """Split name → class name → image files, for a flat or a ``train/``-``test/`` layout."""
    sub_folders = {path.name.lower(): path for path in root.iterdir() if path.is_dir()}
    if "train" in sub_folders and any(name in sub_folders for name in SPLIT_NAMES if name != "train"):
        return {SPLIT_NAMES[name]: _class_folders(path) for name, path in sub_folders.items() if name in SPLIT_NAMES}
    return {"train": _class_folders(root)}


@DATASETS.register("image_folder")
def image_folder(
    path: str,
    transforms: dict | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
):
    """Images in one sub-folder per class (``path/cat/1.png``), or in ``train/``, ``val/``, ``test/`` folders of them.

    ``transforms``: ``{resize, crop, normalize: imagenet|none|{mean, std}, augment, channels: 1|3}``.
    Splits the folder lacks are cut from the training images (``test_fraction``, then the data's
    ``val_fraction``), stratified and seeded.
    """
    optional_import("PIL", "data image_folder")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path: '{root}' is not a folder")
    settings = parse_transforms(transforms)
    pools = image_pools(root)
    class_names = sorted(pools.get("train", {}))
    if len(class_names) < 2:
        raise DataError(
            f"data.path: '{root}' needs one sub-folder of images per class (at least two), "
            f"found {class_names or 'none'}"
        )
    datasets, labels = {}, {}
    for split, classes in pools.items():
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise DataError(f"data.path: the {split} folder has classes the training folder lacks: {unknown}")
        files = [file for name in class_names for file in classes.get(name, [])]
        labels[split] = np.asarray([class_names.index(name) for name in class_names for _ in classes.get(name, [])])
        datasets[split] = ImageFiles(files, labels[split], ImageTransform(settings, train=split == "train"))
    data = assemble(
        datasets,
        labels,
        name=root.name,
        classes=class_names,
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        seed=seed,
        info={"transforms": settings.model_dump(mode="json")},
    )
    # validation and test images cut from the training folder are not augmented
    if settings.augment:
        evaluation = ImageFiles(datasets["train"].files, labels["train"], ImageTransform(settings, train=False))
        for split in ("val", "test"):
            subset = getattr(data, split)
            if getattr(subset, "dataset", None) is datasets["train"]:
                subset.dataset = evaluation
    return data
