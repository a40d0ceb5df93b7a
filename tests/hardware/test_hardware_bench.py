"""``optiforge bench MODEL.onnx --provider NAME`` on the installed ONNX Runtime providers."""

import json

import pytest
import torch
from torch import nn

from optiforge.cli import main
from optiforge.errors import ConfigError
from optiforge.hardware.onnx_runtime import bench_onnx, installed_providers, resolve_provider


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "model.onnx"
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    torch.onnx.export(
        model,
        (torch.randn(1, 16),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    return path


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(100, 8)

    def forward(self, input_ids, attention_mask):
        return (self.embedding(input_ids) * attention_mask.unsqueeze(-1)).mean(dim=1)


def test_bench_times_the_model_on_the_cpu_provider(onnx_file):
    result = bench_onnx(onnx_file, "cpu", batch=8, repeats=5, warmup=1)
    assert result.provider == "CPUExecutionProvider"
    assert result.batch == 8 and result.repeats == 5
    assert 0 < result.p50_ms <= result.p95_ms
    assert result.throughput_per_s == pytest.approx(8 * 1000 / result.p50_ms)


def test_bench_fills_integer_inputs_and_free_dimensions(tmp_path):
    path = tmp_path / "tokens.onnx"
    ids, mask = torch.ones(1, 5, dtype=torch.long), torch.ones(1, 5, dtype=torch.long)
    torch.onnx.export(
        TokenModel().eval(),
        (ids, mask),
        str(path),
        input_names=["input_ids", "attention_mask"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
        dynamo=False,
    )
    result = bench_onnx(path, "CPUExecutionProvider", batch=2, free_dimension=7, repeats=2, warmup=0)
    # the batch axis takes `batch`, the free sequence axis `free_dimension`, and token inputs stay integers
    assert result.inputs == {
        "input_ids": {"shape": [2, 7], "dtype": "int64"},
        "attention_mask": {"shape": [2, 7], "dtype": "int64"},
    }
    assert result.p50_ms > 0


def test_cli_prints_json_for_each_provider(onnx_file, capsys):
    status = main(
        ["bench", str(onnx_file), "--provider", "cpu", "--provider", "CPUExecutionProvider", "--repeats", "3", "--json"]
    )
    assert status == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["provider"] for row in rows] == ["CPUExecutionProvider", "CPUExecutionProvider"]


def test_unknown_provider_is_refused_with_the_installed_ones_listed(onnx_file, capsys):
    status = main(["bench", str(onnx_file), "--provider", "npu"])
    error = capsys.readouterr().err
    assert status == 2
    assert "'npu' is not an installed ONNX Runtime execution provider" in error
    for provider in installed_providers():
        assert provider in error
    with pytest.raises(ConfigError):
        resolve_provider(
            "TensorrtExecutionProvider"
        ) if "TensorrtExecutionProvider" not in installed_providers() else resolve_provider("npu")


def test_missing_file_is_a_one_line_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "absent.onnx")]) == 2
    assert "no ONNX file" in capsys.readouterr().err
