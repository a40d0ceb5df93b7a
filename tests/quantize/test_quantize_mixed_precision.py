"""Mixed precision is a search over k, the most sensitive layers kept float: it stops at the first k meeting the
target, and the float model ships with the search's reason when none does."""

from __future__ import annotations

import pytest
from torch import nn

from optiforge.quantization import QuantConfig
from optiforge.quantization.fidelity import Fidelity
from optiforge.quantization.mixed_precision import mixed_precision

RANKED = ["0", "2", "4", "6", "8"]  # most sensitive first
EXCLUDED = ["9"]


@pytest.fixture
def builds(tmp_path):
    """Runs the search with a build whose output cosine grows by 0.01 per layer kept float; records each build."""
    built: list[list[str]] = []

    def build(model: nn.Module, float_layers: list[str]) -> nn.Module:
        built.append(list(float_layers))
        quantized = nn.Identity()
        quantized.cosine = 0.95 + 0.01 * (len(float_layers) - len(EXCLUDED))
        return quantized

    def evaluate(model: nn.Module) -> Fidelity:
        return Fidelity(cosine=model.cosine, relative_error=1.0 - model.cosine)

    def run(min_fidelity: float, first: int = 1):
        config = QuantConfig(scheme="int8_static", engine="torch", target={"min_fidelity": min_fidelity})
        return mixed_precision(
            nn.Linear(4, 4), config, build, evaluate, RANKED, EXCLUDED, first=first, accuracy=None, folder=tmp_path
        )

    return run, built


def test_the_search_stops_at_the_first_k_meeting_the_target(builds, tmp_path):
    run, built = builds
    searched = run(min_fidelity=0.969)  # met from k = 2 on
    assert [row["name"] for row in searched.rows] == ["1 float", "2 float"]
    assert [row["accepted"] for row in searched.rows] == [False, True]
    assert built == [["9", "0"], ["9", "0", "2"]]  # k = 3 and 4 never built
    assert searched.chosen.count == 2 and searched.chosen.float_layers == ["9", "0", "2"]
    assert searched.rows[1]["objective"] == 2 and searched.rows[1]["cosine"] == pytest.approx(0.97)
    assert searched.reason.startswith("2 float: best layers kept float (2) meeting output cosine >= 0.969")
    assert "others: 1 float 1" in searched.reason
    assert not (tmp_path / "mixed_precision").exists()  # the search's figures are in the rows


def test_the_search_starts_after_the_layers_already_kept_float(builds):
    run, built = builds
    searched = run(min_fidelity=0.969, first=3)
    assert [row["name"] for row in searched.rows] == ["3 float"] and len(built) == 1


def test_when_no_k_meets_the_target_every_k_is_tried_and_the_float_model_ships(builds):
    run, built = builds
    searched = run(min_fidelity=0.999)
    assert searched.chosen is None and len(built) == len(RANKED) - 1  # k stops one short of every layer
    assert searched.reason == (
        "no candidate met output cosine >= 0.999 (1 float, 2 float, 3 float, 4 float did not meet "
        "output cosine >= 0.999); the baseline ships unchanged"
    )


def test_with_every_ranked_layer_but_one_already_float_nothing_is_built(builds):
    run, built = builds
    searched = run(min_fidelity=0.999, first=len(RANKED))
    assert searched.chosen is None and not built and not searched.rows
    assert searched.reason.startswith("no candidate met output cosine >= 0.999 (no candidates)")
