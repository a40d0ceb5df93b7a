"""Device selection, numerics (autocast, loss scaling) and compilation."""

from optiforge.hardware.device import Precision, compile_model, resolve_device, set_threads
from optiforge.hardware.onnx_runtime import bench_onnx, installed_providers

__all__ = [
    "Precision",
    "bench_onnx",
    "compile_model",
    "installed_providers",
    "resolve_device",
    "set_threads",
]
