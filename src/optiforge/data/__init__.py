"""Datasets: built-in ones, files and folders (images, CSV, NPZ, text, saved datasets), user factories, loaders."""

from optiforge.data import arrays as _arrays  # noqa: F401  registers csv and npz
from optiforge.data import images as _images  # noqa: F401  registers image_folder
from optiforge.data import photos as _photos  # noqa: F401  registers the photos dataset
from optiforge.data import saved_datasets as _saved_datasets  # noqa: F401  registers hf_dataset
from optiforge.data import text as _text  # noqa: F401  registers text_file
from optiforge.data.builtin import DATASETS, TaskData, build_data
from optiforge.data.loaders import make_loader

__all__ = ["DATASETS", "TaskData", "build_data", "make_loader"]
