"""Every verb on every zoo model works, checked on its outputs, or is refused by a documented rule."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from zoo_cells import OPERATIONS, run_cell  # noqa: E402
from zoo_models import FAST, ZOO  # noqa: E402

pytest.importorskip("torch_pruning")


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("model", FAST)
def test_one_model_per_family_works_or_is_refused_by_a_rule(model, operation):
    if ZOO[model][0] == "huggingface":
        pytest.importorskip("transformers")
    _family, build, example = ZOO[model]
    cell = run_cell(build, example(), operation)
    assert cell.outcome in ("works", "refused"), f"{model} / {operation}: {cell.note}"


@pytest.mark.zoo  # 25 models x 14 operations: longer than CI's slow suite can hold; run with -m zoo
def test_the_zoo_matrix(tmp_path):
    from zoo_cells import markdown, zoo_cell

    rows = {}
    chosen = [name for name in os.environ.get("ZOO_MODELS", "").split(",") if name] or list(ZOO)
    for model in chosen:
        _family, build, example = ZOO[model]
        rows[model] = {}
        for operation in OPERATIONS:
            rows[model][operation] = cell = zoo_cell(model, build, example(), operation)
            print(f"{model} / {operation}: {cell.outcome} ({cell.note})", flush=True)
    table = markdown(rows)
    print(table)
    Path(os.environ.get("ZOO_MATRIX", tmp_path / "zoo.md")).write_text(table, encoding="utf-8")
    failed = [
        f"{model} / {op}: {cell.note}"
        for model, cells in rows.items()
        for op, cell in cells.items()
        if cell.outcome == "FAILED"
    ]
    assert not failed, "\n".join(failed)
