"""What the compression verbs share: their result, fine-tuning, per-layer values, weight sparsity."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel
from torch import nn

from optiforge.compress.weights import all_weights, covered_layers
from optiforge.config import FinetuneConfig, TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError, ModelError
from optiforge.layers import LayerFilter, check_patterns, matches, weighted_layers
from optiforge.training.callbacks import Callback
from optiforge.training.finetune import Finetune, finetuner


@dataclass
class CompressionResult:
    """What a compression verb did: the model, the config applied, the layers touched and left alone.

    ``weight_sparsity`` is the share of zero entries over every weight tensor
    the verbs cover that the model holds (``optiforge.compress.weights``: Linear,
    Conv, Embedding, Conv1D, RNN and attention weights, tied ones once),
    compressed or not. ``skipped`` names what was left alone and ``reasons``
    says why, where there is more to say than the layer filter.
    ``history`` holds the fine-tuning epochs, each row naming its ``run``.
    """

    model: nn.Module
    verb: str
    config: BaseModel
    layers: list[str]
    skipped: list[str]
    weight_sparsity: float
    history: list[dict] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def applied(self) -> dict:
        """``{verb: the config's non-default fields}``, as the packed file records it."""
        return {self.verb: self.config.model_dump(mode="json", exclude_defaults=True)}

    def info(self) -> dict:
        """The fields a stage adds to its report row."""
        return {
            "weight_sparsity": round(self.weight_sparsity, 4),
            "layers_compressed": len(self.layers),
            "layers_skipped": [
                f"{name} ({self.reasons[name]})" if name in self.reasons else name for name in self.skipped
            ],
        }


@dataclass
class PruneResult(CompressionResult):
    """What :func:`~optiforge.compress.pruning.prune_with_result` did."""


@dataclass
class ShareResult(CompressionResult):
    """What :func:`~optiforge.compress.sharing.share_with_result` did."""


@dataclass
class FactorizeResult(CompressionResult):
    """What :func:`~optiforge.compress.lowrank.factorize_with_result` did (``layers``: those replaced)."""


class Trainer:
    """Runs a :class:`Finetune` with the verb's config, keeping each run's history rows."""

    def __init__(self, finetune: Finetune | None, config: FinetuneConfig) -> None:
        self.finetune = finetune
        self.config = config
        self.history: list[dict] = []

    def __call__(
        self, model: nn.Module, callbacks: Sequence[Callback] = (), name: str = "finetune", epochs: int | None = None
    ) -> nn.Module:
        epochs = self.config.epochs if epochs is None else epochs
        if epochs <= 0 or self.finetune is None:
            return model
        config = self.config if epochs == self.config.epochs else self.config.model_copy(update={"epochs": epochs})
        result = self.finetune(model, config, callbacks=callbacks, name=name)
        self.history += [{**row, "run": name} for row in result.history]
        return result.model


def trainer(
    data: TaskData | None,
    train_config: TrainConfig | None,
    finetune: Finetune | None,
    config: FinetuneConfig,
    verb: str,
) -> Trainer:
    """The verb's fine-tuning: the caller's ``finetune``, or the training engine on ``data``."""
    if finetune is None and data is not None:
        finetune = finetuner(data, train_config)
    if finetune is None and config.epochs > 0:
        raise ConfigError(
            f"{verb}: finetune.epochs={config.epochs} needs data=... (a TaskData) or finetune=... to train with"
        )
    return Trainer(finetune, config)


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


def layer_values(
    model: nn.Module, chosen: Sequence[str], value: dict[str, float] | str | None, field: str
) -> dict[str, float]:
    """Layer name → value for the chosen layers that ``value``'s patterns name (the last matching pattern wins).

    A pattern that matches no layer of the model, or none of the chosen ones, is a :class:`ConfigError`.
    """
    patterns = read_layer_values(value, field)
    check_patterns(model, list(patterns), field)
    result: dict[str, float] = {}
    for pattern, fraction in patterns.items():
        named = [name for name in chosen if matches(name, [pattern])]
        if not named:
            raise ConfigError(
                f"{field}: '{pattern}' names no layer this technique touches after the 'layers' filter; "
                f"touched: {', '.join(chosen)}"
            )
        result.update(dict.fromkeys(named, fraction))
    return result


def chosen_layers(model: nn.Module, layers: LayerFilter, technique: str) -> dict[str, nn.Module]:
    """The layers ``layers`` chooses; when only the default ``keep_last`` left none, the error says so."""
    chosen = layers.select(model, require=False)
    if chosen:
        return chosen
    candidates = list(weighted_layers(model))
    if len(candidates) == 1 and layers == LayerFilter(keep_last=True):
        raise ModelError(
            f"no layer of {type(model).__name__} is left to compress: {technique} keeps the last layer "
            f"'{candidates[0]}' (layers.keep_last: its outputs are the model's outputs), and it is the only "
            "Linear or Conv layer"
        )
    return layers.select(model)  # raises, naming the setting that left nothing


def skipped_layers(model: nn.Module, touched: Sequence[str], reasons: dict[str, str] | None = None) -> list[str]:
    """The layers with weights the verbs cover that were left alone, then any other tensor named in ``reasons``."""
    done = set(touched)
    names = [name for name in covered_layers(model) if name not in done]
    return names + [name for name in (reasons or {}) if name not in done and name not in names]


def weight_sparsity(model: nn.Module) -> float:
    """Share of zero entries over every weight tensor the verbs cover (tied tensors once)."""
    total = zeros = 0
    for weight in all_weights(model):
        total += weight.numel()
        zeros += int((weight.detach() == 0).sum())
    return zeros / total if total else 0.0
