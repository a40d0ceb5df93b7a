"""ONNX files PyTorch did not write, and torch.export programs, become modules checked against the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import onnx_convnet, onnx_mlp, onnx_with_custom_operator
from torch.utils.data import TensorDataset
from vision import needs_vision

from optiforge import ModelConfig, build_model
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError, DataError, ModelError


def task_data(input_shape: tuple[int, ...], classes: int = 10) -> TaskData:
    dataset = TensorDataset(torch.randn(4, *input_shape), torch.arange(4) % classes)
    return TaskData(dataset, dataset, dataset, input_shape, classes)


def onnxruntime_outputs(path, inputs: torch.Tensor) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path))
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]


@pytest.mark.parametrize(
    ("write", "input_shape"), [(onnx_mlp, (64,)), (onnx_convnet, (1, 8, 8))], ids=["mlp", "convnet"]
)
@needs_vision
def test_an_onnx_graph_becomes_layers_that_compute_what_onnx_runtime_does(write, input_shape, tmp_path):
    path = write(tmp_path / "model.onnx")
    model = build_model(ModelConfig(onnx=str(path)), task_data(input_shape))
    assert any(isinstance(module, torch.nn.Linear) for module in model.modules())
    inputs = torch.randn(3, *input_shape)
    with torch.no_grad():
        assert np.abs(model(inputs).numpy() - onnxruntime_outputs(path, inputs)).max() < 1e-5


@needs_vision
def test_an_onnx_model_from_onnxscript_converts(tmp_path):
    pytest.importorskip("onnxscript")
    import onnx
    from onnxscript_model import classifier

    path = tmp_path / "script.onnx"
    onnx.save(classifier.to_model_proto(), str(path))
    model = build_model(ModelConfig(onnx=str(path)), task_data((8,), classes=4))
    inputs = torch.randn(3, 8)
    assert np.abs(model(inputs).detach().numpy() - onnxruntime_outputs(path, inputs)).max() < 1e-5


@needs_vision
def test_an_operator_without_a_converter_is_named(tmp_path):
    path = onnx_with_custom_operator(tmp_path / "custom.onnx")
    with pytest.raises(ModelError, match="operators onnx2torch cannot convert: Swish \\(opset 1, node 'swish'\\)"):
        build_model(ModelConfig(onnx=str(path)), task_data((64,)))


def test_an_onnx_input_shape_other_than_the_data_is_refused_before_running(tmp_path):
    path = onnx_mlp(tmp_path / "mlp.onnx", features=64)
    with pytest.raises(DataError, match="takes inputs of shape \\(batch, 64\\), the data gives \\(batch, 1, 8, 8\\)"):
        build_model(ModelConfig(onnx=str(path)), task_data((1, 8, 8)))


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="model.onnx: no file"):
        build_model(ModelConfig(onnx=str(tmp_path / "none.onnx")), task_data((64,)))
    (tmp_path / "text.onnx").write_text("not a graph")
    with pytest.raises(ModelError, match="is not an ONNX model"):
        build_model(ModelConfig(onnx=str(tmp_path / "text.onnx")), task_data((64,)))
    (tmp_path / "text.pt2").write_text("not a program")
    with pytest.raises(ModelError, match="is not a torch.export program"):
        build_model(ModelConfig(exported=str(tmp_path / "text.pt2")), task_data((64,)))


@pytest.fixture
def program(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    exported = torch.export.export(module, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(exported, tmp_path / "model.pt2")
    return module, tmp_path / "model.pt2"


def test_an_exported_program_runs_trains_and_keeps_its_outputs(program):
    module, path = program
    model = build_model(ModelConfig(exported=str(path)), task_data((1, 8, 8)))
    inputs = torch.randn(5, 1, 8, 8)
    assert torch.allclose(model(inputs), module(inputs))
    model.train()
    model(inputs).sum().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_an_exported_program_refuses_data_of_another_shape(program):
    _, path = program
    with pytest.raises(DataError, match="model.exported: the model takes inputs of shape \\(batch, 1, 8, 8\\)"):
        build_model(ModelConfig(exported=str(path)), task_data((64,)))


def test_an_exported_program_takes_a_checkpoint(program, tmp_path):
    _, path = program
    data = task_data((1, 8, 8))
    model = build_model(ModelConfig(exported=str(path)), data)
    state = {name: torch.zeros_like(value) for name, value in model.state_dict().items()}
    torch.save(state, tmp_path / "zeros.pt")
    loaded = build_model(ModelConfig(exported=str(path), checkpoint=str(tmp_path / "zeros.pt")), data)
    assert torch.count_nonzero(loaded(torch.randn(2, 1, 8, 8))) == 0
