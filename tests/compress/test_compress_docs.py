"""The Python examples of docs/compression.md run as written."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "compression.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_documented_example_runs(index, tmp_path, monkeypatch):
    if "transformers" in BLOCKS[index]:
        pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[index], f"{DOC.name} block {index}", "exec"), {})
