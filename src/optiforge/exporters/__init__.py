"""Export formats: ``export(model, path, format=...)`` and the exporter registry.

Every module of this package registers its formats on import; heavy
dependencies (onnx, onnxruntime) are imported inside the exporters.
"""

import importlib
import pkgutil

from optiforge.exporters.base import EXPORTERS, export, register_exporter

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EXPORTERS", "export", "register_exporter"]
