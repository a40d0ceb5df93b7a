"""qat_int8 with engine openvino: NNCF fake quantization trained in PyTorch, shipped as an int8 OpenVINO IR."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from optiforge.config import FinetuneConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import ModelError
from optiforge.exporters.onnx import OnnxModule
from optiforge.exporters.openvino import OpenVinoModule
from optiforge.quantization import QuantConfig, quantize_with_result
from optiforge.training.finetune import finetuner

pytest.importorskip("openvino")
pytest.importorskip("nncf")
onnx = pytest.importorskip("onnx")


class TinyMobileNet(nn.Module):
    """Stem, depthwise-separable block with BatchNorms and ReLU6, pooled classifier: EfficientNet-Lite in small."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(8)
        self.project = nn.Conv2d(8, 16, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(16)
        self.dropout = nn.Dropout(0.5)
        self.classifier = nn.Linear(16, 5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = F.relu6(self.stem_bn(self.stem(pixels)))
        features = F.relu6(self.depthwise_bn(self.depthwise(features)))
        features = self.project_bn(self.project(features))
        return self.classifier(self.dropout(features.mean(dim=(2, 3))))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    network = TinyMobileNet()
    for module in network.modules():  # BatchNorm statistics that are not the identity, so folding matters
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return network.eval()


@pytest.fixture(scope="module")
def data(model) -> TaskData:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(96, 3, 12, 12, generator=generator) * 2 - 1
    with torch.no_grad():
        logits = model(images)
    splits = [TensorDataset(images[start : start + 32], logits[start : start + 32]) for start in (0, 32, 64)]
    return TaskData(*splits, input_shape=(3, 12, 12), num_classes=5, task="logit_fidelity", name="tiny")


def _quantize(model, data, tmp_path, **fields):
    config = QuantConfig(
        scheme="qat_int8", engine="openvino", finetune=FinetuneConfig(epochs=1, lr=1e-3), calibration={"batches": 2}
    )
    config = config.model_copy(update=fields)
    calibration = torch.utils.data.DataLoader(data.train, batch_size=16)
    validation = torch.utils.data.DataLoader(data.val, batch_size=32)
    base = TrainConfig(batch_size=16, optimizer={"name": "adam", "lr": 1e-3})
    return quantize_with_result(
        model,
        config,
        calibration=calibration,
        validation=validation,
        finetune=finetuner(data, base),
        output_dir=tmp_path,
    )


def test_batchnorms_fold_into_their_convolutions_without_changing_outputs(model, data):
    from optiforge.quantization.openvino_qat import fold_batchnorms

    inputs = data.test.tensors[0][:4]
    folded = fold_batchnorms(model, inputs)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    assert any(isinstance(module, nn.BatchNorm2d) for module in model.modules())  # the caller's model is unchanged
    with torch.no_grad():
        assert torch.allclose(folded(inputs), model(inputs), atol=1e-5)


def test_qat_trains_fake_quantization_and_ships_an_int8_ir_plain_openvino_runs(model, data, tmp_path):
    result = _quantize(model, data, tmp_path)
    assert result.engine == "openvino" and isinstance(result.model, OpenVinoModule)
    assert [row["epoch"] for row in result.history][-1] == 1
    graph = result.model.path.read_text()
    assert graph.count('type="FakeQuantize"') >= 4  # the input of each layer and each weight

    inputs = data.test.tensors[0]
    np.save(tmp_path / "inputs.npy", inputs.numpy())
    script = textwrap.dedent(
        f"""
        import sys, numpy, openvino
        assert "optiforge" not in sys.modules
        compiled = openvino.Core().compile_model(r"{result.model.path}", "CPU")
        numpy.save(r"{tmp_path / "outputs.npy"}", compiled(numpy.load(r"{tmp_path / "inputs.npy"}"))[0])
        """
    )
    subprocess.run([sys.executable, "-I", "-c", script], check=True, timeout=120)
    outputs = torch.from_numpy(np.load(tmp_path / "outputs.npy"))
    with torch.no_grad():
        expected = model(inputs)
    assert F.cosine_similarity(outputs, expected, dim=1).mean().item() > 0.98
    assert (outputs - expected).abs().max().item() > 0  # int8 arithmetic, not the float graph

    onnx_path = result.export_onnx(tmp_path / "model.onnx", inputs[:2])
    operators = {node.op_type for node in onnx.load(onnx_path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= operators  # the trained quantizers, as QDQ pairs
    with torch.no_grad():
        onnx_outputs = OnnxModule(onnx_path)(inputs)
    assert F.cosine_similarity(onnx_outputs, outputs, dim=1).mean().item() > 0.99


def test_layers_kept_float_get_no_fake_quantizers(model, data, tmp_path):
    from optiforge.quantization.openvino_qat import prepare

    batches = [data.train.tensors[0][:16]]
    every = prepare(model, batches, [])
    kept = prepare(model, batches, ["depthwise"])

    def quantizers(prepared: nn.Module) -> int:
        return sum(1 for name, _ in prepared.named_modules() if "quantizer" in type(_).__name__.lower())

    assert 0 < quantizers(kept) < quantizers(every)


def test_a_model_nncf_cannot_prepare_falls_back_to_post_training_int8(model, data, tmp_path, monkeypatch, caplog):
    from optiforge.quantization import openvino_qat

    def refuse(*arguments, **named):
        raise ModelError("quantize: NNCF cannot place fake quantizers in TinyMobileNet (unsupported op 'roll')")

    monkeypatch.setattr(openvino_qat, "prepare", refuse)
    with caplog.at_level(logging.WARNING, logger="optiforge"):
        result = _quantize(model, data, tmp_path)
    assert "unsupported op 'roll'" in caplog.text and "post-training int8" in caplog.text
    assert isinstance(result.model, OpenVinoModule) and result.history == []
    assert 'type="FakeQuantize"' in result.model.path.read_text()
