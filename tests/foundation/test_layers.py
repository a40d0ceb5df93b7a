"""Dependencies point one way: core ← techniques ← training ← technique verbs ← stages ← runner ← cli."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).parents[2] / "src" / "optiforge"
CORE = {"errors", "registry", "config", "imports", "files", "tasks"}
TOP = {"stages", "runner", "cli", "commands", "recipe", "launch"}
VERBS = {"compress", "quantization", "distillation"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optiforge."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("optiforge.")}
    return names


def _part(path: Path) -> str:
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def test_dependencies_point_one_way():
    problems = []
    for path in SOURCE.rglob("*.py"):
        part = _part(path)
        if part == "__init__":
            continue
        imported = _imports(path) - {part}
        if part in CORE and imported - CORE:
            problems.append(f"{path.name}: core imports {sorted(imported - CORE)}")
        if part not in TOP and imported & TOP:
            problems.append(f"{path.relative_to(SOURCE)}: imports {sorted(imported & TOP)}")
        if part == "training" and imported & VERBS:
            problems.append(f"{path.relative_to(SOURCE)}: the loop imports {sorted(imported & VERBS)}")
    assert not problems, "\n".join(problems)


def test_code_passes_ruff():
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        import pytest

        pytest.skip("ruff is not installed")
    root = SOURCE.parents[1]
    result = subprocess.run([ruff, "check", "src", "tests", "benchmarks"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
