"""device: auto, precision, compile fallback, channels-last, and the distributed backend choice."""

import logging

import pytest
import torch
from torch import nn

import optiforge
from optiforge.config import HardwareConfig
from optiforge.errors import ConfigError
from optiforge.hardware import Precision, compile_model, device, resolve_device
from optiforge.parallel import process_group


@pytest.fixture
def no_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "_xla_device", lambda: None)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_prefers_cuda_then_xla_then_mps_then_cpu(monkeypatch, no_accelerators):
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    xla = torch.device("meta")  # stands in for an XLA device
    monkeypatch.setattr(device, "_xla_device", lambda: xla)
    assert resolve_device("auto") is xla
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "mps", "xla"])
def test_asking_for_a_missing_device_names_it(no_accelerators, name):
    with pytest.raises(ConfigError, match=f"hardware.device: '{name}'"):
        resolve_device(name)


def test_backend_is_nccl_on_cuda_and_gloo_on_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert process_group.backend_for_device() == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert process_group.backend_for_device() == "nccl"


def test_bf16_autocast_computes_linear_layers_in_bf16_on_cpu():
    layer = nn.Linear(8, 4)
    precision = Precision("bf16", torch.device("cpu"))
    with precision.autocast():
        assert layer(torch.randn(2, 8)).dtype == torch.bfloat16
    assert layer(torch.randn(2, 8)).dtype == torch.float32
    assert not precision.scaler.is_enabled()  # bf16 has fp32's exponent range: no loss scaling


def test_fp16_on_cpu_warns_and_scales_only_on_cuda(caplog):
    with caplog.at_level(logging.WARNING, logger="optiforge"):
        precision = Precision("fp16", torch.device("cpu"))
    assert "bf16 is the CPU's half precision" in caplog.text
    assert not precision.scaler.is_enabled()


def test_training_in_bf16_learns(digits):
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), digits)
    config = optiforge.TrainConfig(epochs=2, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    result = optiforge.train(
        model, digits, config, hardware=HardwareConfig(device="cpu", precision="bf16"), progress=False
    )
    assert result.history[-1]["val_accuracy"] > 0.5
    assert all(parameter.dtype == torch.float32 for parameter in result.model.parameters())  # fp32 master weights


def test_compile_failure_falls_back_to_eager_with_a_message(monkeypatch, caplog):
    def broken_compile(model, **kwargs):
        def run(*args):
            raise RuntimeError("backend exploded\nlong trace")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = nn.Sequential(nn.Linear(8, 4))
    with caplog.at_level(logging.WARNING, logger="optiforge"):
        result = compile_model(model, HardwareConfig(compile=True), torch.randn(2, 8))
    assert result is model
    assert "torch.compile failed (RuntimeError: backend exploded); running eagerly" in caplog.text


def test_channels_last_reorders_convolution_weights():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    compile_model(model, HardwareConfig(channels_last=True), torch.randn(2, 3, 8, 8))
    weight = model[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()


@pytest.mark.slow
def test_compiled_model_gives_the_eager_outputs():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    inputs = torch.randn(4, 8)
    compiled = compile_model(model, HardwareConfig(compile=True), inputs)
    with torch.no_grad():
        torch.testing.assert_close(compiled(inputs), model(inputs))
