"""The docs cannot rot: README and docs/ code blocks and docstring examples run."""

from __future__ import annotations

import doctest
import functools
import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from torch.utils.data import TensorDataset

import optiforge
from optiforge.data.builtin import DATASETS

ROOT = Path(__file__).parents[2]


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def _modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages(optiforge.__path__, "optiforge."))


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples_run(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
WITH_PYTHON = [path for path in DOCUMENTS if _python_blocks(path)]


# Trainings as long as a real one (the distillation guide: 30 + 300 epochs on MNIST-1D): the calls are checked on
# a tenth of each split by default, and on the whole data set with -m slow.
SHRUNK_DATASETS = ("mnist1d",)
SHARE_KEPT = 10


def _run_blocks(path: Path) -> None:
    namespace: dict = {}
    for index, block in enumerate(_python_blocks(path)):
        exec(compile(block, f"{path.name} block {index}", "exec"), namespace)


@pytest.fixture
def shrunk_datasets():
    """The data sets of SHRUNK_DATASETS keep every SHARE_KEPT-th example of each split: shapes and classes stay."""
    saved = {name: DATASETS.get(name) for name in SHRUNK_DATASETS}
    for name, builder in saved.items():

        @functools.wraps(builder)
        def shrunk(*args, _builder=builder, **options):
            splits = _builder(*args, **options)
            return tuple(TensorDataset(*(tensor[::SHARE_KEPT] for tensor in split.tensors)) for split in splits)

        DATASETS.add(name, shrunk)
    yield
    for name, builder in saved.items():
        DATASETS.add(name, builder)


@pytest.mark.parametrize("path", WITH_PYTHON, ids=[path.name for path in WITH_PYTHON])
def test_documented_python_blocks_run(path, tmp_path, monkeypatch, shrunk_datasets):
    """Every ```python block runs as written; the blocks of one document run in order, as a reader would."""
    monkeypatch.chdir(tmp_path)
    _run_blocks(path)


SHRINKING = [path for path in WITH_PYTHON if any(f'name="{name}"' in path.read_text() for name in SHRUNK_DATASETS)]


@pytest.mark.slow
@pytest.mark.parametrize("path", SHRINKING, ids=[path.name for path in SHRINKING])
def test_documented_python_blocks_run_on_the_whole_data(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run_blocks(path)


YAML_BLOCKS = [
    (path, index, block)
    for path in DOCUMENTS
    for index, block in enumerate(re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S))
]


@pytest.mark.parametrize(("path", "index", "block"), YAML_BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in YAML_BLOCKS])
def test_documented_recipes_validate(path, index, block):
    """Every ```yaml block is a valid recipe (a bare list is a list of stages)."""
    import yaml

    data = yaml.safe_load(block)
    optiforge.load_recipe({"stages": data} if isinstance(data, list) else data)
