"""Built-in dataset ``photos``: views of the natural photographs that ship inside Python packages.

Sources: scikit-learn's sample images (a Chinese temple, a flower), matplotlib's
``grace_hopper.jpg`` and, when scikit-image is installed, its astronaut, coffee,
cat (``chelsea``) and rocket photographs. Each split takes whole photographs
(no photograph gives views to two splits), chosen with a fixed seed; each view
is a random crop (a quarter to all of the photo's area, aspect 3:4 to 4:3)
resized to 224×224, flipped half the time, with a small brightness, contrast
and saturation jitter. Inputs are ``pixel_values`` normalised for
EfficientNet-Lite; targets are the float reference model's logits, so the
``logit_fidelity`` task measures every later stage by its agreement with it.
The targets are cached on disk (:func:`cache_folder`), keyed by the views and
the reference weights, so building the same views again skips the model.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from optiforge.data.builtin import DATASETS, TaskData
from optiforge.errors import DataError
from optiforge.files import atomic_save
from optiforge.imports import optional_import

log = logging.getLogger("optiforge")

VIEW_SIZE = 224
MIN_CROP_AREA = 0.25  # smaller crops of these few photos often show nothing an ImageNet class names
MAX_JITTER = 0.1  # brightness, contrast and saturation factors in [0.9, 1.1]
TARGET_BATCH = 32
CACHE_VARIABLE = "OPTIFORGE_CACHE_DIR"


def _sklearn_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _matplotlib_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib.cbook import get_sample_data
        from PIL import Image

        with Image.open(get_sample_data(name, asfileobj=False)) as image:
            return np.asarray(image.convert("RGB"))

    return load


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return getattr(optional_import("skimage.data", "the photos dataset's scikit-image photographs"), name)()

    return load


PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "china": _sklearn_photo("china.jpg"),
    "flower": _sklearn_photo("flower.jpg"),
    "grace_hopper": _matplotlib_photo("grace_hopper.jpg"),
    "astronaut": _skimage_photo("astronaut"),
    "coffee": _skimage_photo("coffee"),
    "chelsea": _skimage_photo("chelsea"),
    "rocket": _skimage_photo("rocket"),
}
OPTIONAL_PACKAGES = {"astronaut": "skimage", "coffee": "skimage", "chelsea": "skimage", "rocket": "skimage"}


def available_photos() -> dict[str, torch.Tensor]:
    """Name → RGB photograph ``(3, height, width)`` in [0, 1], for every source installed here."""
    import importlib.util

    photos = {}
    for name, load in PHOTOS.items():
        package = OPTIONAL_PACKAGES.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            continue
        pixels = np.array(load()[..., :3], dtype=np.uint8)  # a writable copy
        photos[name] = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    return photos


def split_photos(names: list[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """Shuffle whole photographs with ``seed`` into (calibration, validation, evaluation) groups."""
    if len(names) < 3:
        raise DataError(f"data photos: {len(names)} photographs are too few to keep three splits apart (need 3)")
    order = sorted(names)
    generator = torch.Generator().manual_seed(seed)
    order = [order[index] for index in torch.randperm(len(order), generator=generator).tolist()]
    evaluation_count = validation_count = max(1, round(len(order) * 0.3))
    evaluation = order[:evaluation_count]
    validation = order[evaluation_count : evaluation_count + validation_count]
    return order[evaluation_count + validation_count :], validation, evaluation


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_view(photo: torch.Tensor, generator: torch.Generator, size: int = VIEW_SIZE) -> torch.Tensor:
    """One augmented ``(3, size, size)`` view in [0, 1]: random crop, resize, flip, colour jitter."""
    _, height, width = photo.shape
    for _ in range(10):
        area = height * width * _uniform(generator, MIN_CROP_AREA, 1.0)
        aspect = math.exp(_uniform(generator, math.log(3 / 4), math.log(4 / 3)))
        crop_width, crop_height = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if crop_width <= width and crop_height <= height:
            break
    else:  # the crop never fitted: take the largest centred square
        crop_width = crop_height = min(height, width)
    top = int(torch.randint(0, height - crop_height + 1, (), generator=generator))
    left = int(torch.randint(0, width - crop_width + 1, (), generator=generator))
    crop = photo[:, top : top + crop_height, left : left + crop_width]
    view = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    if float(torch.rand((), generator=generator)) < 0.5:
        view = view.flip(-1)
    view = view * _uniform(generator, 1 - MAX_JITTER, 1 + MAX_JITTER)  # brightness
    mean = view.mean()
    view = mean + (view - mean) * _uniform(generator, 1 - MAX_JITTER, 1 + MAX_JITTER)  # contrast
    gray = (0.299 * view[0] + 0.587 * view[1] + 0.114 * view[2])[None]
    view = gray + (view - gray) * _uniform(generator, 1 - MAX_JITTER, 1 + MAX_JITTER)  # saturation
    return view.clamp(0.0, 1.0)


def photo_views(photos: dict[str, torch.Tensor], names: list[str], count: int, seed: int) -> torch.Tensor:
    """``count`` views ``(count, 3, 224, 224)`` in [0, 1], shared out evenly over the photographs ``names``.

    Each photograph's views come from its own generator (seeded by ``seed`` and
    its name), so they do not change when other photographs join or leave.
    """
    views = []
    for index, name in enumerate(names):
        share = count // len(names) + (1 if index < count % len(names) else 0)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        views += [random_view(photos[name], generator) for _ in range(share)]
    return torch.stack(views) if views else torch.zeros(0, 3, VIEW_SIZE, VIEW_SIZE)


@torch.no_grad()
def reference_logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """The float model's logits ``(count, 1000)``, batch by batch."""
    model.eval()
    if not len(pixel_values):
        return torch.zeros(0, model(pixel_values[:0].new_zeros(1, *pixel_values.shape[1:])).shape[1])
    return torch.cat([model(batch) for batch in pixel_values.split(TARGET_BATCH)])


def cache_folder() -> Path:
    """Where computed targets are kept: ``$OPTIFORGE_CACHE_DIR/photos``, else ``~/.cache/optiforge/photos``."""
    root = os.environ.get(CACHE_VARIABLE)
    return (Path(root) if root else Path.home() / ".cache" / "optiforge") / "photos"


def _fingerprint(model: torch.nn.Module, pixel_values: torch.Tensor) -> str:
    digest = hashlib.sha256(f"{torch.__version__}|{tuple(pixel_values.shape)}".encode())
    digest.update(pixel_values.contiguous().numpy().tobytes())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def cached_reference_logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """:func:`reference_logits`, kept on disk (:func:`cache_folder`) under a hash of the views and the
    model's weights, so a rebuild of the same views runs the reference model only once."""
    path = cache_folder() / f"logits-{_fingerprint(model, pixel_values)}.pt"
    if path.is_file():
        try:
            logits = torch.load(path, weights_only=True)
            if torch.is_tensor(logits) and logits.shape[0] == len(pixel_values):
                return logits
        except (OSError, RuntimeError, EOFError):
            pass  # unreadable: computed again and rewritten
    logits = reference_logits(model, pixel_values)
    try:
        atomic_save(logits, path)
    except OSError as error:  # a read-only home or a full disk costs the cache, not the dataset
        log.warning("data photos: targets not cached in %s (%s)", path.parent, error)
    return logits


@DATASETS.register("photos")
def photos(views: int = 320, seed: int = 0, weights: str | None = None) -> TaskData:
    """Augmented views of packaged photographs, normalised for EfficientNet-Lite0, its logits as targets.

    ``views`` is the total over the three splits, shared out in proportion to
    their photographs; ``seed`` picks which photographs go where and the
    views; ``weights`` is the reference model's state dict (default: the
    packaged ImageNet weights).
    """
    from optiforge.models.efficientnet import load_efficientnet_lite0, normalize

    found = available_photos()
    if views < 3:
        raise DataError(f"data.views: {views} is too few; each of the three splits needs at least one (give >= 3)")
    groups = split_photos(list(found), seed)
    counts = [max(1, round(views * len(group) / len(found))) for group in groups]
    counts[0] = max(1, views - counts[1] - counts[2])
    reference = load_efficientnet_lite0(weights)
    splits = []
    for group, count in zip(groups, counts, strict=True):
        pixel_values = normalize(photo_views(found, group, count, seed))
        splits.append(TensorDataset(pixel_values, cached_reference_logits(reference, pixel_values)))
    train, val, test = splits
    return TaskData(
        train=train,
        val=val,
        test=test,
        input_shape=tuple(test[0][0].shape),
        num_classes=test.tensors[1].shape[1],
        task="logit_fidelity",
        name="photos",
        info={
            "photos": {"train": groups[0], "val": groups[1], "test": groups[2]},
            "views": {"train": len(train), "val": len(val), "test": len(test)},
        },
    )
