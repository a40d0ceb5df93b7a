"""ONNX for a model quantized by PyTorch or torchao.

PyTorch's int8 modules do not export to ONNX, so the exporter starts again
from the float model and lets ONNX Runtime's quantizer apply the same scheme
(same calibration batches, same float layers): an int8 QDQ or integer-op
graph. A QAT model exports its trained fake-quantization as QDQ pairs.
Weight-only and fp16/bf16 models have no CPU counterpart in ONNX Runtime;
their float graph is written, with a warning.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.exporters.onnx import export_onnx
from optiforge.quantization.config import QuantConfig

log = logging.getLogger("optiforge")


class FixedFakeQuantize(nn.Module):
    """A trained fake-quantizer frozen to its scale and zero point (exports as QuantizeLinear/DequantizeLinear)."""

    def __init__(self, trained: nn.Module) -> None:
        super().__init__()
        self.register_buffer("scale", trained.scale.detach().clone().float())
        self.register_buffer("zero_point", trained.zero_point.detach().clone().to(torch.int32))
        self.quant_min, self.quant_max = trained.quant_min, trained.quant_max
        self.axis = trained.ch_axis
        self.per_channel = trained.is_per_channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(
                x, self.scale, self.zero_point, self.axis, self.quant_min, self.quant_max
            )
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.quant_min, self.quant_max)


def freeze_fake_quantization(prepared: nn.Module) -> nn.Module:
    """A copy of a QAT model whose fused fake-quantizers (not exportable) are frozen ones."""
    from torch.ao.quantization.fake_quantize import FakeQuantizeBase

    frozen = copy.deepcopy(prepared).cpu().eval()
    for module in list(frozen.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, FakeQuantizeBase):
                setattr(module, name, FixedFakeQuantize(child))
    return frozen


def onnx_export_for(
    config: QuantConfig,
    float_model: nn.Module,
    batches: list[Any],
    float_layers: list[str],
    qat_model: nn.Module | None = None,
) -> Callable[[Path, Any], Path]:
    """``export(path, example) -> path``: the ONNX graph of a model quantized by PyTorch or torchao.

    The closure holds the float model and the calibration batches, so the
    quantized module itself never does.
    """

    def export(path: Path, example_input: Any) -> Path:
        from optiforge.quantization.onnx_runtime import float_nodes, quantize_onnx

        path = Path(path)
        example = example_input.cpu() if torch.is_tensor(example_input) else example_input
        scheme = config.scheme
        if scheme == "qat_int8" and qat_model is not None:
            return export_onnx(freeze_fake_quantization(qat_model), path, example)
        if scheme not in ("int8_static", "int8_dynamic"):
            log.warning("onnx export: ONNX Runtime has no CPU kernels for %s; the float graph was written", scheme)
            return export_onnx(float_model, path, example)
        float_path = export_onnx(float_model, path.with_name(path.stem + "-float.onnx"), example)
        try:
            observer = config.calibration.observer
            return quantize_onnx(
                float_path,
                path,
                scheme=scheme,
                calibration=batches if scheme == "int8_static" else None,
                calibration_batches=config.calibration.batches,
                observer=observer if observer != "mse" else "minmax",
                per_channel=config.weights.per_channel,
                nodes_to_exclude=float_nodes(float_path, float_layers),
            )
        finally:
            float_path.unlink(missing_ok=True)

    return export
