"""Stage kinds: each recipe stage is one verb applied to the model.

A stage kind is a config class plus a function ``apply(model, config, ctx)``
that returns a :class:`StageOutput` (or a bare ``nn.Module``). New techniques
register here and touch nothing else::

    @register_stage("mystage", MyConfig, "what it does")
    def mystage(model, config, ctx): ...
"""

import importlib
import pkgutil

from optiforge.stages.base import STAGES, StageContext, StageKind, StageOutput, register_stage

# every module of this package registers its stage kinds on import
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STAGES", "StageContext", "StageKind", "StageOutput", "register_stage"]
