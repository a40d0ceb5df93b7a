"""Models from outside optiforge: torchvision and timm architectures by name, offline.

:func:`build_from_source` dispatches a ``model:`` section's one source field
(``torchvision``, ``timm``, ``huggingface``, ``onnx``, ``exported``) to its
builder. Nothing is downloaded: architectures start from random weights, and
weights come from local files (``weights:`` for torchvision, ``checkpoint:``
for every source).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from optiforge.config import ModelConfig
from optiforge.data.builtin import TaskData, call_with_options
from optiforge.errors import ConfigError, DataError, DependencyError, ModelError
from optiforge.models.weights import model_state, read_weights
from optiforge.registry import closest

log = logging.getLogger("optiforge")


def import_compiled(module: str, extra: str, where: str) -> ModuleType:
    """Import a package that carries compiled operators, naming the extra when it is missing or broken.

    A torchvision wheel built for another torch (a CUDA wheel beside a CPU torch) fails while
    registering its operators, with a RuntimeError rather than an ImportError; timm and
    onnx2torch import torchvision and fail the same way.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.split(".")[0] not in (module.split(".")[0], "torchvision"):
            raise
        raise DependencyError(
            f"{where}: needs the package '{module}', which is not installed: pip install 'optiforge[{extra}]'"
        ) from None
    except Exception as error:  # noqa: BLE001  any failure inside the import is reported with its reason
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DependencyError(
            f"{where}: importing '{module}' failed ({type(error).__name__}: {reason}); the installed torchvision "
            f"is probably built for another torch than {torch.__version__}: pip install 'optiforge[{extra}]' "
            "with a torchvision that matches your torch"
        ) from None


def _image_channels(input_shape: tuple[int, ...], where: str, source: str) -> int:
    if len(input_shape) != 3:
        raise DataError(
            f"{where}: {source} takes images (channels, height, width), the data gives inputs of shape "
            f"{tuple(input_shape)}"
        )
    return int(input_shape[0])


def read_state_dict(path: str | Path, where: str) -> dict[str, torch.Tensor]:
    """A state dict from a local file (tensors only, nothing in it run), or a training checkpoint's model entry."""
    if not Path(path).is_file():
        raise ConfigError(f"{where}: no file '{path}'")
    return model_state(read_weights(path, where), path, where)


def load_weights_with_new_head(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> list[str]:
    """Load ``state``; entries whose shape differs (a classifier sized for other classes) keep their new values.

    Returns the names left at their initial values; any other mismatch (a missing or unknown
    entry) is refused.
    """
    own = model.state_dict()
    resized = [key for key, value in state.items() if key in own and tuple(own[key].shape) != tuple(value.shape)]
    result = model.load_state_dict({k: v for k, v in state.items() if k not in resized}, strict=False)
    missing = [key for key in result.missing_keys if key not in resized]
    if missing or result.unexpected_keys:
        raise ModelError(
            f"{where}: the weights do not fit the architecture: missing {missing[:5] or 'none'}, "
            f"unknown {result.unexpected_keys[:5] or 'none'}"
        )
    if resized:
        log.warning("%s: %s keep new values sized for the data (the file's differ)", where, ", ".join(resized))
    return resized


def torchvision_model(
    architecture: str, input_shape: tuple[int, ...], num_classes: int, where: str, weights: str | None = None, **options
) -> nn.Module:
    _image_channels(input_shape, where, f"torchvision model '{architecture}'")
    models = import_compiled("torchvision.models", "vision", f"{where}.torchvision")
    known = models.list_models()
    if architecture not in known:
        raise ConfigError(
            f"{where}.torchvision: unknown architecture '{architecture}'{closest(architecture, known)}; "
            "see torchvision.models.list_models()"
        )
    model = models.get_model(architecture, weights=None, num_classes=num_classes, **options)
    if weights is not None:
        load_weights_with_new_head(model, read_state_dict(weights, f"{where}.weights"), f"{where}.weights")
    return model


def timm_model(architecture: str, input_shape: tuple[int, ...], num_classes: int, where: str, **options) -> nn.Module:
    channels = _image_channels(input_shape, where, f"timm model '{architecture}'")
    timm = import_compiled("timm", "vision", f"{where}.timm")
    if not timm.is_model(architecture):
        known = timm.list_models()
        raise ConfigError(
            f"{where}.timm: unknown architecture '{architecture}'{closest(architecture, known)}; see timm.list_models()"
        )
    options.setdefault("in_chans", channels)
    return timm.create_model(architecture, pretrained=False, num_classes=num_classes, **options)


def _source_builders() -> dict[str, tuple[Callable[..., nn.Module], str]]:
    """Source field → (builder, the builder's parameter that takes the field's value)."""
    from optiforge.models.files import exported_model, onnx_model
    from optiforge.models.huggingface import huggingface_model

    return {
        "torchvision": (torchvision_model, "architecture"),
        "timm": (timm_model, "architecture"),
        "huggingface": (huggingface_model, "location"),
        "onnx": (onnx_model, "path"),
        "exported": (exported_model, "path"),
    }


def build_from_source(config: ModelConfig, data: TaskData, where: str = "model") -> nn.Module:
    """The model of a ``torchvision``/``timm``/``huggingface``/``onnx``/``exported`` source, sized for ``data``."""
    source, value = config.source
    builder, value_parameter = _source_builders()[source]
    fixed = {"input_shape": tuple(data.input_shape), "num_classes": data.num_classes, "where": where}
    if source == "torchvision":
        fixed["weights"] = config.weights
    if source == "huggingface":
        fixed.update(task=config.task, data_task=data.task)
    try:
        return call_with_options(builder, config.options, where, **fixed, **{value_parameter: value})
    except (ConfigError, DataError, ModelError, DependencyError):
        raise
    except TypeError as error:
        raise ConfigError(f"{where}: cannot build {source} '{value}': {error}") from None
    except Exception as error:  # noqa: BLE001  the library's own refusal, named with the source
        reason = str(error).splitlines()[0] if str(error) else ""
        raise ModelError(f"{where}: building {source} '{value}' failed: {type(error).__name__}: {reason}") from None
