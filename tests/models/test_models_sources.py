"""torchvision and timm architectures by name: sized for the data, offline, refused by name when wrong."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset
from vision import needs_vision

from optiforge import ModelConfig, build_model
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError, DataError, DependencyError, ModelError
from optiforge.models.sources import import_compiled


def images(channels: int = 3, size: int = 32, classes: int = 10) -> TaskData:
    dataset = TensorDataset(torch.randn(4, channels, size, size), torch.arange(4) % classes)
    return TaskData(dataset, dataset, dataset, (channels, size, size), classes)


def test_a_config_names_exactly_one_source():
    assert ModelConfig(timm="convnext_atto").source == ("timm", "convnext_atto")
    assert ModelConfig().source == ("name", "mlp")
    with pytest.raises(ConfigError, match="not 2: name='mlp', onnx='m.onnx'"):
        ModelConfig(name="mlp", onnx="m.onnx")
    with pytest.raises(ConfigError, match="none given"):
        ModelConfig(name=None)
    with pytest.raises(ConfigError, match="'task' is for huggingface models"):
        ModelConfig(torchvision="resnet18", task="embedding")
    with pytest.raises(ConfigError, match="'weights' is for torchvision models, not timm"):
        ModelConfig(timm="convnext_atto", weights="w.pt")


def test_a_recipe_with_two_sources_is_refused_by_field():
    from optiforge.recipe import load_recipe

    with pytest.raises(ConfigError, match="model: give one model source, not 2"):
        load_recipe({"model": {"torchvision": "resnet18", "timm": "convnext_atto"}})


@pytest.fixture(scope="module")
def shufflenet():
    """A torchvision ShuffleNetV2 built for five classes (one build for the tests that compare with it)."""
    return build_model(ModelConfig(torchvision="shufflenet_v2_x0_5"), images(classes=5)).eval()


@needs_vision
def test_torchvision_builds_the_architecture_for_the_data_classes(shufflenet):
    assert type(shufflenet).__name__ == "ShuffleNetV2"
    assert shufflenet(torch.randn(2, 3, 32, 32)).shape == (2, 5)


@needs_vision
def test_torchvision_weights_load_and_a_differently_sized_head_is_made_new(shufflenet, tmp_path):
    torch.save(shufflenet.state_dict(), tmp_path / "shufflenet.pt")
    config = ModelConfig(torchvision="shufflenet_v2_x0_5", weights=str(tmp_path / "shufflenet.pt"))
    model = build_model(config, images(classes=3))
    assert torch.equal(model.conv1[0].weight, shufflenet.conv1[0].weight)
    assert torch.equal(model.conv5[0].weight, shufflenet.conv5[0].weight)
    assert model.fc.weight.shape == (3, 1024)


@needs_vision
def test_torchvision_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(ModelError, match="model.weights: the weights do not fit the architecture"):
        build_model(ModelConfig(torchvision="squeezenet1_1", weights=str(tmp_path / "linear.pt")), images())


@needs_vision
def test_a_checkpoint_loads_into_a_torchvision_model(shufflenet, tmp_path):
    torch.save(shufflenet.state_dict(), tmp_path / "model.pt")
    config = ModelConfig(torchvision="shufflenet_v2_x0_5", checkpoint=str(tmp_path / "model.pt"))
    model = build_model(config, images(classes=5)).eval()
    inputs = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(inputs), shufflenet(inputs))


@needs_vision
def test_timm_takes_the_data_channels_and_classes():
    model = build_model(ModelConfig(timm="convnext_atto"), images(channels=1, classes=6))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 6)


@needs_vision
def test_unknown_architectures_and_options_are_named():
    with pytest.raises(ConfigError, match="unknown architecture 'resnet19' \\(did you mean 'resnet18'\\?\\)"):
        build_model(ModelConfig(torchvision="resnet19"), images())
    with pytest.raises(ConfigError, match="model.timm: unknown architecture 'convnext_attoo'"):
        build_model(ModelConfig(timm="convnext_attoo"), images())
    with pytest.raises(ConfigError, match="unexpected keyword argument 'depth'"):
        build_model(ModelConfig(torchvision="resnet18", depth=3), images())


@needs_vision
def test_image_models_refuse_flat_data_by_shape():
    dataset = TensorDataset(torch.randn(4, 64), torch.arange(4))
    flat = TaskData(dataset, dataset, dataset, (64,), 4)
    with pytest.raises(DataError, match="takes images \\(channels, height, width\\), the data gives .*\\(64,\\)"):
        build_model(ModelConfig(torchvision="resnet18"), flat)


def test_a_torchvision_built_for_another_torch_is_a_dependency_error(monkeypatch):
    import importlib

    def failing_import(name, *args, **kwargs):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(importlib, "import_module", failing_import)
    with pytest.raises(DependencyError, match="operator torchvision::nms does not exist.*optiforge\\[vision\\]"):
        import_compiled("torchvision.models", "vision", "model.torchvision")
