"""Everything a recipe can get wrong, checked before a run writes anything.

``optiforge validate`` and :func:`~optiforge.runner.run_recipe` both call
:func:`check_recipe`: names (optimizers, export formats, stage kinds), the
data and the model (an example goes through it), teachers, and every stage's
layer names against the model that stage will receive. That model is the
recipe's model, because training keeps the architecture and so do pruning,
sharing and quantization as far as names go; a stage that hands on another
architecture (``distill``: the student) returns it from its check.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from optiforge.config import OptimizerConfig
from optiforge.data.builtin import TaskData, build_data
from optiforge.exporters import EXPORTERS
from optiforge.models.builtin import build_model
from optiforge.recipe import Recipe
from optiforge.stages import STAGES
from optiforge.tasks import Task, task_for
from optiforge.training.checkpoint import rng_state, seed_everything, set_rng_state
from optiforge.training.optimizers import build_optimizer


@dataclass
class Prepared:
    """What the checks built, handed to the run so nothing is built twice."""

    recipe: Recipe
    data: TaskData
    model: nn.Module
    task: Task


def _check_optimizer(model: nn.Module, config: OptimizerConfig | None) -> None:
    """The optimizer's name and options, built on the model's parameters (nothing is stepped)."""
    # a model with nothing to train (a frozen encoder that is only measured) leaves nothing to check
    if config is not None and any(parameter.requires_grad for parameter in model.parameters()):
        build_optimizer(model, config)


def check_recipe(recipe: Recipe) -> Prepared:
    """Build the data and the model and check every part of ``recipe`` against them.

    Raises an :class:`~optiforge.errors.OptiforgeError` naming the field on
    the first mistake. Writes nothing; the random state afterwards is the one
    right after the model was built, so a run is reproducible with or without
    these checks.
    """
    for format_name in recipe.export:
        EXPORTERS.get(format_name, field="export")
    data = build_data(recipe.data)
    seed_everything(recipe.train.seed)  # the model's initial weights are part of a reproducible run
    model = build_model(recipe.model, data)  # runs an example through it: data and model shapes fit
    task = task_for(data.task, model)
    after_build = rng_state()
    try:
        _check_optimizer(model, recipe.train.optimizer)
        current = model
        for index, spec in enumerate(recipe.stages):
            kind = STAGES.get(spec.kind, field=f"stages[{index}]")
            _check_optimizer(current, getattr(spec.config, "optimizer", None))
            if kind.check is not None:
                current = kind.check(current, spec.config, data) or current
    finally:
        set_rng_state(after_build)
    return Prepared(recipe, data, model, task)
