"""The docs cannot rot: README and docs/ code blocks and docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import optiforge

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


@pytest.mark.parametrize("path", WITH_PYTHON, ids=[path.name for path in WITH_PYTHON])
def test_documented_python_blocks_run(path, tmp_path, monkeypatch):
    """Every ```python block runs as written; the blocks of one document run in order, as a reader would."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for index, block in enumerate(_python_blocks(path)):
        exec(compile(block, f"{path.name} block {index}", "exec"), namespace)


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
