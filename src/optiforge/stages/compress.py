"""Stage kinds ``prune``, ``share`` and ``factorize``: each writes its model as a packed file,
so the report's ``size_bytes`` is what the compressed model really takes on disk.

The row of each stage adds ``weight_sparsity`` (share of zeros over the
weights of every Linear and Conv layer of the model), the layers compressed
and skipped, and ``compression``: the configs applied so far by this and the
compression stages right before it, as the packed file's header records them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from optiforge.compress.common import CompressionResult, read_layer_values
from optiforge.compress.config import FactorizeConfig, PruneConfig, ShareConfig
from optiforge.data.builtin import TaskData
from optiforge.layers import check_patterns
from optiforge.stages.base import StageContext, StageOutput, register_stage


def _output(result: CompressionResult, ctx: StageContext, info: dict) -> StageOutput:
    from optiforge.compress.packed import write_packed

    earlier = ctx.previous[-1].get("compression", []) if ctx.previous else []
    applied = [*earlier, result.applied]
    artifact = None
    if ctx.strategy.is_main:
        artifact = write_packed(result.model, ctx.stage_dir / "model.ofpk", applied=applied)
    info = {**result.info(), **info, "compression": applied}
    return StageOutput(result.model, artifact=artifact, info=info, history=result.history)


def check_prune(model: nn.Module, config: PruneConfig, data: TaskData) -> None:
    """Layer names in ``layers.exclude`` and ``layer_sparsity``; structured pruning keeps every name."""
    config.layers.check(model, "prune.layers")
    check_patterns(
        model, list(read_layer_values(config.layer_sparsity, "prune.layer_sparsity")), "prune.layer_sparsity"
    )


def check_layers(stage: str) -> Callable[[nn.Module, ShareConfig | FactorizeConfig, TaskData], None]:
    def check(model: nn.Module, config: ShareConfig | FactorizeConfig, data: TaskData) -> None:
        config.layers.check(model, f"{stage}.layers")

    return check


@register_stage(
    "prune",
    PruneConfig,
    "magnitude (zeros) or structured (smaller layers) pruning, optional fine-tuning",
    check=check_prune,
)
def prune_stage(model: nn.Module, config: PruneConfig, ctx: StageContext) -> StageOutput:
    from optiforge.compress.pruning import prune_with_result

    result = prune_with_result(model, config, ctx.data, finetune=ctx.finetuner)
    return _output(result, ctx, {"method": config.method})


@register_stage(
    "share", ShareConfig, "k-means weight sharing per layer, shared values fine-tuned", check=check_layers("share")
)
def share_stage(model: nn.Module, config: ShareConfig, ctx: StageContext) -> StageOutput:
    from optiforge.compress.sharing import share_with_result

    result = share_with_result(model, config, ctx.data, finetune=ctx.finetuner)
    return _output(result, ctx, {"clusters": config.clusters})


@register_stage(
    "factorize",
    FactorizeConfig,
    "low-rank (truncated SVD) factorisation of Linear and Conv layers",
    check=check_layers("factorize"),
)
def factorize_stage(model: nn.Module, config: FactorizeConfig, ctx: StageContext) -> StageOutput:
    from optiforge.compress.lowrank import factorize_with_result

    result = factorize_with_result(model, config, ctx.data, finetune=ctx.finetuner)
    return _output(result, ctx, {})
