"""What the compression verbs share: fine-tuning, per-layer values, the applied-config log."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from optiforge.config import TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError
from optiforge.training.callbacks import Callback

# finetune(model, epochs, callbacks, name) -> trained model
Finetune = Callable[[nn.Module, int, Sequence[Callback], str], nn.Module]

LOG_ATTRIBUTE = "optiforge_compression"


def make_finetune(
    data: TaskData | None, train_config: TrainConfig | None, finetune: Finetune | None, epochs: int, verb: str
) -> Finetune | None:
    """The fine-tuning function a verb uses: the caller's, or the training engine on ``data``."""
    if finetune is not None:
        return finetune
    if data is None:
        if epochs > 0:
            raise ConfigError(f"{verb}: finetune_epochs={epochs} needs data=... (a TaskData) to train on")
        return None
    settings = train_config or TrainConfig()

    def run(model: nn.Module, epochs: int, callbacks: Sequence[Callback], name: str) -> nn.Module:
        from optiforge.training.loop import train

        return train(
            model,
            data,
            settings.model_copy(update={"epochs": epochs}),
            callbacks=callbacks,
            progress=False,
            description=name,
        ).model

    return run


def read_layer_values(value: dict[str, float] | str | None, field: str) -> dict[str, float]:
    """Per-layer values given inline or as a ``sensitivity.json`` path."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"{field}: no file '{path}' (write one with 'optiforge sensitivity RECIPE')")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        values = content.get("layer_sparsity", content) if isinstance(content, dict) else None
        if not isinstance(values, dict):
            raise ValueError("no 'layer_sparsity' mapping")
        result = {str(name): float(fraction) for name, fraction in values.items()}
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{field}: '{path}' is not a sensitivity file ({error})") from None
    for name, fraction in result.items():
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"{field}: '{path}' gives {name} the value {fraction}, outside [0, 1)")
    return result


def record(model: nn.Module, verb: str, config: BaseModel) -> None:
    """Append ``{verb: config}`` to the model's log of applied compression configs."""
    log = list(getattr(model, LOG_ATTRIBUTE, []))
    log.append({verb: config.model_dump(mode="json", exclude_defaults=True)})
    setattr(model, LOG_ATTRIBUTE, log)


def applied(model: nn.Module) -> list[dict]:
    """The compression configs applied to ``model``, oldest first."""
    return list(getattr(model, LOG_ATTRIBUTE, []))


def weight_sparsity(model: nn.Module) -> float:
    """Share of zero entries over the weights of Linear and Conv layers."""
    from optiforge.compress.select import WEIGHTED_TYPES

    total = zeros = 0
    for module in model.modules():
        if isinstance(module, WEIGHTED_TYPES):
            total += module.weight.numel()
            zeros += int((module.weight.detach() == 0).sum())
    return zeros / total if total else 0.0


def device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
