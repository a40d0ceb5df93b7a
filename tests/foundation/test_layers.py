"""Dependencies point one way (the import-linter contract in pyproject.toml), and the code passes ruff."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

SOURCE = Path(__file__).parents[2] / "src" / "optiforge"
ROOT = SOURCE.parents[1]


def _tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    return contract["layers"]


def test_every_module_of_the_package_sits_in_a_layer():
    named = set()
    for layer in _contract_layers():
        named |= {part.strip(" ()").removeprefix("optiforge.") for part in re.split(r"[:|]", layer)}
    modules = {path.stem for path in SOURCE.glob("*.py") if path.stem != "__init__"}
    packages = {path.parent.name for path in SOURCE.glob("*/__init__.py")}
    missing = (modules | packages) - named
    assert not missing, f"not in any layer of the contract: {sorted(missing)}"


def test_dependencies_point_one_way():
    # import-linter also sees the imports inside functions
    result = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:]


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: a core module that imports the runner is caught."""
    copy = tmp_path / "src"
    subprocess.run(["cp", "-r", str(SOURCE.parent), str(copy)], check=True)
    (copy / "optiforge" / "files.py").write_text(
        (copy / "optiforge" / "files.py").read_text() + "\n\ndef _late():\n    import optiforge.runner  # noqa\n"
    )
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    result = subprocess.run(
        [_tool("lint-imports")], cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(copy)}
    )
    assert result.returncode == 1
    assert "optiforge.files is not allowed to import optiforge.runner" in result.stdout


def test_code_passes_ruff():
    result = subprocess.run(
        [_tool("ruff"), "check", "src", "tests", "benchmarks"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
