"""The ``distill`` stage and the built-in distillation recipes, run for a few epochs."""

import json

import pytest
import torch

import optiforge

QUICK_MEASURE = ["measure.latency_repeats=3", "measure.throughput_repeats=1", "measure.warmup=1"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_distill_recipe_reports_teacher_and_student_side_by_side(tmp_path):
    overrides = ["train.epochs=3", "stages.0.distill.finetune.epochs=3", *QUICK_MEASURE]
    result = optiforge.run_recipe("distill", overrides, out=tmp_path, progress=False, show_table=False)
    report = json.loads((tmp_path / "report.json").read_text())
    teacher_row, student_row = report["stages"]
    assert [teacher_row["stage"], student_row["stage"]] == ["train", "distill"]
    assert student_row["teacher_value"] == teacher_row["value"]
    assert student_row["teacher_params"] == teacher_row["params"] == 50826
    assert student_row["params"] == 12060  # the 100-50 student: about a quarter of the teacher
    assert student_row["size_bytes"] < teacher_row["size_bytes"] / 3
    assert student_row["value"] > 0.5 and 0.5 < student_row["teacher_agreement"] <= 1.0
    assert "train_distill_loss" in report["histories"]["distill"][-1]
    assert isinstance(result.model, torch.nn.Sequential) and result.model[1].out_features == 100


def test_distill_mnist1d_recipe_runs_a_few_epochs(tmp_path):
    result = optiforge.run_recipe(
        "distill-mnist1d",
        ["train.epochs=1", "stages.0.distill.finetune.epochs=1", *QUICK_MEASURE],
        out=tmp_path,
        progress=False,
        show_table=False,
    )
    rows = result.report["stages"]
    assert rows[1]["stage"] == "distill" and rows[1]["params"] < rows[0]["params"] / 5


def test_stage_with_a_checkpointed_teacher_and_a_shrunk_student(tmp_path):
    data_spec = {"name": "digits"}
    data = optiforge.build_data(optiforge.DataConfig(**data_spec))
    torch.manual_seed(0)
    teacher = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[64]), data)
    optiforge.train(
        teacher, data, optiforge.TrainConfig(epochs=3, optimizer={"name": "adamw", "lr": 0.01}), progress=False
    )
    weights = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), weights)
    recipe = {
        "name": "external-teacher",
        "data": data_spec,
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 0},
        "measure": {"latency_repeats": 3, "throughput_repeats": 1},
        "stages": [
            {
                "distill": {
                    "student": {"shrink": {"width": 0.5}},
                    "finetune": {"epochs": 2},
                    "mixing": {"kind": "none"},
                    "teacher": {"name": "mlp", "hidden": [64], "checkpoint": str(weights)},
                }
            }
        ],
    }
    result = optiforge.run_recipe(recipe, out=tmp_path / "run", progress=False, show_table=False)
    row = result.report["stages"][1]
    assert row["teacher_params"] == sum(p.numel() for p in teacher.parameters())
    assert row["teacher_value"] > 0.8  # the checkpoint's figures, not the untrained incoming model's
    assert result.model[1].out_features == 32  # half the teacher's 64, not the incoming 8
    assert [history["epoch"] for history in result.report["histories"]["distill"]] == [1, 2]
    assert row["epochs"] == 2


def test_stage_resumes_from_its_checkpoint(tmp_path):
    overrides = ["train.epochs=1", "stages.0.distill.finetune.epochs=1", *QUICK_MEASURE]
    first = optiforge.run_recipe("distill", overrides, out=tmp_path, progress=False, show_table=False)
    again = optiforge.run_recipe("distill", overrides, out=tmp_path, resume=True, progress=False, show_table=False)
    assert (tmp_path / "distill" / "distill" / "checkpoint.pt").is_file()
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_distill_mnist1d_recipe_closes_much_of_the_gap(tmp_path):
    result = optiforge.run_recipe("distill-mnist1d", out=tmp_path, progress=False, show_table=False)
    teacher, student = result.report["stages"]
    assert teacher["value"] > 0.9 and student["value"] > 0.75
