"""Device selection, numerics (autocast, loss scaling) and compilation."""

from optiforge.hardware.device import Precision, compile_model, cpu_has_bf16_units, resolve_device, set_threads
from optiforge.hardware.onnx_runtime import bench_onnx, installed_providers

__all__ = [
    "Precision",
    "bench_onnx",
    "compile_model",
    "cpu_has_bf16_units",
    "installed_providers",
    "resolve_device",
    "set_threads",
]
