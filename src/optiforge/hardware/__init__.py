"""Device selection, numerics (autocast, loss scaling) and compilation."""

from optiforge.hardware.device import Precision, compile_model, resolve_device, set_threads

__all__ = ["Precision", "compile_model", "resolve_device", "set_threads"]
