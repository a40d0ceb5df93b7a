"""Datasets: built-in ones, user factories, splits and loaders."""

from optiforge.data import photos as _photos  # noqa: F401  registers the photos dataset
from optiforge.data.builtin import DATASETS, TaskData, build_data
from optiforge.data.loaders import make_loader

__all__ = ["DATASETS", "TaskData", "build_data", "make_loader"]
