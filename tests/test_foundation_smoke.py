"""The main job end to end, quickly: the quickstart recipe for two epochs."""

import json

import optiforge


def test_quickstart_runs_end_to_end_and_writes_report(tmp_path):
    result = optiforge.run_recipe("quickstart", ["train.epochs=2"], out=tmp_path, progress=False, show_table=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["stage"] for row in report["stages"]] == ["train"]
    assert report["stages"][0]["value"] > 0.5
    assert (tmp_path / report["stages"][0]["artifact"]).is_file()
    assert result.report["recipe"] == "quickstart"
