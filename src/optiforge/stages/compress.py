"""Stage kinds ``prune``, ``share`` and ``factorize``: each writes its model as a packed file,
so the report's ``size_bytes`` is what the compressed model really takes on disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from optiforge.compress.common import read_layer_values
from optiforge.compress.config import FactorizeConfig, PruneConfig, ShareConfig
from optiforge.compress.select import check_names
from optiforge.data.builtin import TaskData
from optiforge.stages.base import StageContext, StageOutput, register_stage
from optiforge.training.callbacks import Callback


class _Finetune:
    """Fine-tuning through the recipe's training engine, keeping each run's history."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.history: list[dict] = []

    def __call__(self, model: nn.Module, epochs: int, callbacks: Sequence[Callback], name: str) -> nn.Module:
        result = self.ctx.finetune(model, epochs, callbacks=callbacks, name=name)
        self.history += [{**row, "run": name} for row in result.history]
        return result.model


def _output(model: nn.Module, ctx: StageContext, finetune: _Finetune, info: dict) -> StageOutput:
    from optiforge.compress.common import weight_sparsity
    from optiforge.compress.packed import write_packed

    artifact = None
    if ctx.strategy.is_main:
        artifact = write_packed(model, ctx.stage_dir / "model.ofpk")
    info = {"weight_sparsity": round(weight_sparsity(model), 4), **info}
    return StageOutput(model, artifact=artifact, info=info, history=finetune.history)


def check_prune(model: nn.Module, config: PruneConfig, data: TaskData) -> None:
    """Layer names in ``layers.exclude`` and ``layer_sparsity``; structured pruning keeps every name."""
    check_names(model, config.layers.exclude, "prune.layers.exclude")
    check_names(model, list(read_layer_values(config.layer_sparsity, "prune.layer_sparsity")), "prune.layer_sparsity")


def check_layers(stage: str) -> Callable[[nn.Module, ShareConfig | FactorizeConfig, TaskData], None]:
    def check(model: nn.Module, config: ShareConfig | FactorizeConfig, data: TaskData) -> None:
        check_names(model, config.layers.exclude, f"{stage}.layers.exclude")

    return check


@register_stage(
    "prune",
    PruneConfig,
    "magnitude (zeros) or structured (smaller layers) pruning, optional fine-tuning",
    check=check_prune,
)
def prune_stage(model: nn.Module, config: PruneConfig, ctx: StageContext) -> StageOutput:
    from optiforge.compress.pruning import prune

    finetune = _Finetune(ctx)
    model = prune(model, config, ctx.data, finetune=finetune)
    return _output(model, ctx, finetune, {"method": config.method})


@register_stage(
    "share", ShareConfig, "k-means weight sharing per layer, shared values fine-tuned", check=check_layers("share")
)
def share_stage(model: nn.Module, config: ShareConfig, ctx: StageContext) -> StageOutput:
    from optiforge.compress.sharing import share

    finetune = _Finetune(ctx)
    model = share(model, config, ctx.data, finetune=finetune)
    return _output(model, ctx, finetune, {"clusters": config.clusters})


@register_stage(
    "factorize",
    FactorizeConfig,
    "low-rank (truncated SVD) factorisation of Linear and Conv layers",
    check=check_layers("factorize"),
)
def factorize_stage(model: nn.Module, config: FactorizeConfig, ctx: StageContext) -> StageOutput:
    from optiforge.compress.lowrank import factorize

    finetune = _Finetune(ctx)
    model = factorize(model, config, ctx.data, finetune=finetune)
    return _output(model, ctx, finetune, {})
