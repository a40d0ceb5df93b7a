"""The ``prune`` verb: magnitude (unstructured) or structured pruning of a model."""

from __future__ import annotations

from typing import Any

from torch import nn

from optiforge.compress.checks import check_result, example_for, rollback_on_failure
from optiforge.compress.common import PruneResult, skipped_layers, trainer, weight_sparsity
from optiforge.compress.config import PruneConfig
from optiforge.compress.structured import prune_structured
from optiforge.compress.unstructured import prune_unstructured
from optiforge.config import TrainConfig
from optiforge.data.builtin import TaskData
from optiforge.training.finetune import Finetune


def prune_with_result(
    model: nn.Module,
    config: PruneConfig | None = None,
    data: TaskData | None = None,
    *,
    train_config: TrainConfig | None = None,
    finetune: Finetune | None = None,
    example_inputs: Any = None,
) -> PruneResult:
    """Prune ``model`` in place; return it with what was done (see :func:`prune`).

    >>> import optiforge
    >>> from optiforge.compress import PruneConfig, prune_with_result
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), data)
    >>> result = prune_with_result(model, PruneConfig(sparsity=0.75, scope="layer", layers={"exclude": ["3"]}))
    >>> result.layers, result.skipped, round(result.weight_sparsity, 2)
    (['1'], ['3'], 0.65)
    """
    config = config or PruneConfig()
    example = example_for(example_inputs, data)
    with rollback_on_failure(model, enabled=example is not None):
        train = trainer(data, train_config, finetune, config.finetune, "prune")
        if config.method == "structured":
            model, layers, reasons = prune_structured(model, config, train, data=data, example_inputs=example_inputs)
        else:
            model, layers, reasons = prune_unstructured(model, config, train)
        check_result(model, example, "prune")
    return PruneResult(
        model,
        "prune",
        config,
        layers,
        skipped_layers(model, layers, reasons),
        weight_sparsity(model),
        train.history,
        reasons=reasons,
    )


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
    heads (a smaller dense model). With ``finetune.epochs`` the model is
    trained by ``finetune`` (a :class:`~optiforge.training.finetune.Finetune`),
    or else on ``data`` with ``train_config``.

    >>> import optiforge
    >>> from optiforge.compress import PruneConfig, prune
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[32]), data)
    >>> model = prune(model, PruneConfig(sparsity=0.75, scope="layer"))
    >>> round(float((model[1].weight == 0).float().mean()), 2)
    0.75
    """
    return prune_with_result(
        model, config, data, train_config=train_config, finetune=finetune, example_inputs=example_inputs
    ).model
