"""Stage kinds for sentence encoders (all-MiniLM-L6-v2 and other BERT-like models).

``encoder_runtime`` turns the current :class:`~optiforge.encoders.SentenceEncoder`
into a fused, optionally smoothed and int8-quantized ONNX Runtime graph;
``encoder_search`` measures several such configurations side by side on the
validation sentences and keeps the fastest that stays faithful enough (when
none does, the float PyTorch encoder ships unchanged).
Importing this module also registers the ``minilm`` model and the
``embedding`` task.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from optiforge import encoders  # noqa: F401  registers model 'minilm' and task 'embedding'
from optiforge.config import Config
from optiforge.data.builtin import TaskData
from optiforge.encoders.optimize import EncoderRuntimeConfig
from optiforge.errors import ModelError
from optiforge.stages.base import StageContext, StageOutput, register_stage


def _calibration(ctx: StageContext, batches: int, batch_size: int = 32) -> list:
    """Packed training batches, each trimmed like a real batch would be."""
    from optiforge.encoders.module import pack, unpack

    inputs = [ctx.data.train[index][0] for index in range(min(len(ctx.data.train), batches * batch_size))]
    if not inputs:
        raise ModelError("encoder stage: the training split has no sentences to calibrate with")
    stacked = torch.stack(inputs)
    return [pack(*unpack(stacked[start : start + batch_size])) for start in range(0, stacked.shape[0], batch_size)]


def _encoder_of(model: nn.Module, stage: str) -> nn.Module:
    from optiforge.encoders.module import SentenceEncoder

    if not isinstance(model, SentenceEncoder):
        raise ModelError(
            f"{stage}: needs a PyTorch sentence encoder (model: {{name: minilm}}), "
            f"got {type(model).__name__}; put this stage before any stage that leaves PyTorch"
        )
    return model


def _check_runtime(encoder: nn.Module, config: EncoderRuntimeConfig, field: str) -> None:
    """Every layer pattern and type name must match a layer of the encoder."""
    config.layers.check(encoder, f"{field}.layers")
    if config.smoothing is not None:
        config.smoothing.layers.check(encoder, f"{field}.smoothing.layers")


def check_encoder_runtime(model: nn.Module, config: EncoderRuntimeConfig, data: TaskData) -> None:
    _check_runtime(_encoder_of(model, "encoder_runtime"), config, "encoder_runtime")


@register_stage(
    "encoder_runtime",
    EncoderRuntimeConfig,
    "sentence encoder → fused (smoothed, int8) ONNX Runtime graph",
    check=check_encoder_runtime,
)
def encoder_runtime(model: nn.Module, config: EncoderRuntimeConfig, ctx: StageContext) -> StageOutput:
    from optiforge.encoders.optimize import optimize_encoder_with_result

    encoder = _encoder_of(model, "encoder_runtime")
    result = optimize_encoder_with_result(
        encoder, config, _calibration(ctx, config.calibration_batches), path=ctx.stage_dir / "encoder.onnx"
    )
    return StageOutput(result.model, artifact=result.model.path, info={"runtime": result.summary()})


class EncoderSearchConfig(Config):
    """Try runtime configurations, keep the fastest meeting the fidelity floors (none: the float encoder ships)."""

    candidates: list[EncoderRuntimeConfig] = Field(min_length=1)
    min_cosine: float = Field(0.995, gt=0.0, le=1.0)
    min_neighbours_kept: float = Field(0.95, ge=0.0, le=1.0)
    batch_size: int = Field(32, ge=1, description="batch size the speed is measured at")
    timing_rounds: int = Field(3, ge=1, description="rounds over the validation batches, interleaved")
    length_sorted: bool = Field(
        False, description="judge on batches of length-sorted sentences (as sentence-transformers' encode() makes)"
    )


def check_encoder_search(model: nn.Module, config: EncoderSearchConfig, data: TaskData) -> None:
    encoder = _encoder_of(model, "encoder_search")
    for index, candidate in enumerate(config.candidates):
        _check_runtime(encoder, candidate, f"encoder_search.candidates[{index}]")


@register_stage(
    "encoder_search",
    EncoderSearchConfig,
    "measure runtime configurations side by side, keep the fastest faithful one (else float), plot the trade-off",
    check=check_encoder_search,
)
def encoder_search(model: nn.Module, config: EncoderSearchConfig, ctx: StageContext) -> StageOutput:
    from optiforge.encoders.search import search_runtime

    encoder = _encoder_of(model, "encoder_search")
    calibration = _calibration(ctx, max(candidate.calibration_batches for candidate in config.candidates))
    result = search_runtime(encoder, config, calibration, ctx.data.val, ctx.stage_dir)
    return StageOutput(result.model, artifact=result.artifact, info={"search": result.summary()})
