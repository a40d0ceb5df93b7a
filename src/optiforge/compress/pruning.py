"""The ``prune`` verb: magnitude (unstructured) or structured pruning of a model."""

from __future__ import annotations

from typing import Any

from torch import nn

from optiforge.compress.common import Finetune, make_finetune, record
from optiforge.compress.config import PruneConfig
from optiforge.compress.structured import prune_structured
from optiforge.compress.unstructured import prune_unstructured
from optiforge.config import TrainConfig
from optiforge.data.builtin import TaskData


def prune(
    model: nn.Module,
    config: PruneConfig | None = None,
    data: TaskData | None = None,
    *,
    train_config: TrainConfig | None = None,
    finetune: Finetune | None = None,
    example_inputs: Any = None,
) -> nn.Module:
    """Prune ``model`` in place and return it (a plain module with a normal forward).

    ``method: magnitude`` zeroes the smallest weights (a sparse model);
    ``method: structured`` removes whole channels, neurons or attention
    heads (a smaller dense model). With ``finetune_epochs`` the model is
    trained on ``data`` with ``train_config`` (or a ``finetune`` function).

    >>> import optiforge
    >>> from optiforge.compress import PruneConfig, prune
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), data)
    >>> model = prune(model, PruneConfig(sparsity=0.75, scope="layer"))
    >>> round(float((model[1].weight == 0).float().mean()), 2)
    0.75
    """
    config = config or PruneConfig()
    finetune = make_finetune(data, train_config, finetune, config.finetune_epochs, "prune")
    if config.method == "structured":
        model = prune_structured(model, config, finetune, data=data, example_inputs=example_inputs)
    else:
        model = prune_unstructured(model, config, finetune)
    record(model, "prune", config)
    return model
