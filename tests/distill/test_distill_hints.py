"""Hint adapters map the student's feature shape onto the teacher's."""

import torch
from torch import nn

from optiforge.distillation.hints import FeatureRecorder, make_adapter


def test_equal_shapes_need_no_adapter():
    assert isinstance(make_adapter(torch.Size([2, 8, 5]), torch.Size([2, 8, 5])), nn.Identity)


def test_channel_first_features_get_a_one_by_one_map_over_channels():
    adapter = make_adapter(torch.Size([2, 4, 10]), torch.Size([2, 16, 10]))
    features = torch.randn(2, 4, 10)
    out = adapter(features)
    assert out.shape == (2, 16, 10)
    # a 1×1 convolution: each position is mapped on its own
    shifted = adapter(features.roll(3, dims=2))
    assert torch.allclose(shifted, out.roll(3, dims=2), atol=1e-6)


def test_token_features_are_mapped_along_the_hidden_axis():
    adapter = make_adapter(torch.Size([2, 7, 8]), torch.Size([2, 7, 32]))
    assert adapter(torch.randn(2, 7, 8)).shape == (2, 7, 32)
    assert adapter.linear.in_features == 8 and adapter.linear.out_features == 32


def test_different_layouts_are_flattened_then_mapped():
    adapter = make_adapter(torch.Size([2, 64]), torch.Size([2, 128, 5]))  # MLP hidden → CNN feature map
    assert adapter(torch.randn(2, 64)).shape == (2, 128, 5)
    assert adapter.linear.in_features == 64 and adapter.linear.out_features == 640


def test_recorder_keeps_the_latest_output_and_detaches_cleanly():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    recorder = FeatureRecorder({"1": model[1]})
    inputs = torch.randn(5, 3)
    model(inputs)
    assert torch.equal(recorder.features["1"], torch.relu(model[0](inputs)))
    recorder.remove()
    assert not model[1]._forward_hooks and recorder.features == {}
