"""Quantization: int8 dynamic/static, weight-only int8/int4, fp16/bf16, QAT, mixed precision.

``quantize(model, QuantConfig(...), calibration=loader)`` returns a module that
runs; the recipe stage ``quantize:`` takes the same fields. Engines: PyTorch
(``torch.ao.quantization``), torchao and ONNX Runtime; ``engine: auto``
measures the installed ones and keeps the fastest that meets the target
(the float model when none does); ``quantize_with_result`` says what was done.
"""

from optiforge.quantization.api import QuantizeResult, quantize, quantize_with_result
from optiforge.quantization.artifact import load_quantized_state, save_quantized
from optiforge.quantization.config import ENGINES, OBSERVERS, SCHEMES, QuantConfig
from optiforge.quantization.onnx_runtime import calibration_reader, quantize_onnx
from optiforge.quantization.schemes import SUPPORT

__all__ = [
    "ENGINES",
    "OBSERVERS",
    "SCHEMES",
    "SUPPORT",
    "QuantConfig",
    "QuantizeResult",
    "calibration_reader",
    "load_quantized_state",
    "quantize",
    "quantize_onnx",
    "quantize_with_result",
    "save_quantized",
]
