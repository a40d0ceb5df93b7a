"""Built-in recipes run end to end and reach what their descriptions promise (slow: whole trainings)."""

from __future__ import annotations

import json

import pytest

import optiforge


@pytest.mark.slow
def test_mnist1d_recipe_reaches_the_published_cnn_accuracy(tmp_path):
    # the recipe's description cites the published MNIST-1D CNN baseline of about 94%
    optiforge.run_recipe("mnist1d", out=tmp_path, progress=False, show_table=False)
    report = json.loads((tmp_path / "report.json").read_text())
    (row,) = report["stages"]
    assert row["stage"] == "train" and row["metric"] == "accuracy"
    assert row["value"] >= 0.92, row["value"]
    assert row["size_bytes"] == (tmp_path / row["artifact"]).stat().st_size
