"""``optiforge quantize-onnx`` quantizes an ONNX file and refuses what it cannot do."""

from __future__ import annotations

import onnx
import torch

from optiforge.cli import main
from optiforge.exporters.onnx import export_onnx


def test_quantize_onnx_command_writes_a_smaller_int8_graph(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    source = export_onnx(model, tmp_path / "float.onnx", torch.randn(1, 64))
    destination = tmp_path / "int8.onnx"
    assert (
        main(
            [
                "quantize-onnx",
                str(source),
                str(destination),
                "--scheme",
                "int8_static",
                "--data",
                "digits",
                "--calibration-batches",
                "2",
            ]
        )
        == 0
    )
    assert "smaller" in capsys.readouterr().out
    assert destination.stat().st_size < source.stat().st_size / 2.5
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(str(destination)).graph.node}


def test_quantize_onnx_command_needs_data_for_static(tmp_path, capsys):
    source = export_onnx(torch.nn.Linear(4, 2), tmp_path / "float.onnx", torch.randn(1, 4))
    assert main(["quantize-onnx", str(source), str(tmp_path / "q.onnx"), "--scheme", "int8_static"]) == 2
    assert "needs --data" in capsys.readouterr().err
