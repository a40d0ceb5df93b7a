"""Stage kinds for sentence encoders (all-MiniLM-L6-v2 and other BERT-like models).

``encoder_runtime`` turns the current :class:`~optiforge.encoders.SentenceEncoder`
into a fused, optionally smoothed and int8-quantized ONNX Runtime graph (or, with
``engine: openvino``, an OpenVINO IR quantized by NNCF);
``encoder_search`` is a ``search`` whose candidates are one ``encoder_runtime``
each, judged by the fidelity floors of a sentence encoder (when none meets
them, the float PyTorch encoder ships unchanged).
Importing this module also registers the ``minilm`` model and the
``embedding`` task.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from optiforge import encoders  # noqa: F401  registers model 'minilm' and task 'embedding'
from optiforge.config import Config
from optiforge.data.builtin import TaskData
from optiforge.encoders.optimize import EncoderRuntimeConfig
from optiforge.errors import ModelError
from optiforge.stages.base import StageContext, StageOutput, register_stage
from optiforge.stages.search import SearchStageConfig


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
    "sentence encoder → fused (smoothed, int8) ONNX Runtime graph, or OpenVINO IR (NNCF int8)",
    check=check_encoder_runtime,
)
def encoder_runtime(model: nn.Module, config: EncoderRuntimeConfig, ctx: StageContext) -> StageOutput:
    from optiforge.encoders.batches import batches_from
    from optiforge.encoders.fidelity import ENCODE_BATCH
    from optiforge.encoders.optimize import optimize_encoder_with_result

    encoder = _encoder_of(model, "encoder_runtime")
    ranked = config.layers.float_most_sensitive and len(ctx.data.val)
    calibration = _calibration(ctx, config.calibration_batches)
    result = optimize_encoder_with_result(
        encoder,
        config,
        calibration,
        path=ctx.stage_dir / "encoder.onnx",
        evaluation=batches_from(ctx.data.val, ENCODE_BATCH)[0] if ranked else (),
        rankings=ctx.shared_work(
            "encoder_runtime", config, {"layers": {"float_most_sensitive"}, "session": {"threads", "spinning"}}
        ),
    )
    exports = {"onnx": _onnx_twin(encoder, config, calibration)} if config.engine == "openvino" else {}
    return StageOutput(result.model, artifact=result.model.path, info={"runtime": result.summary()}, exports=exports)


def _onnx_twin(encoder: nn.Module, config: EncoderRuntimeConfig, calibration: list):
    """``export: [onnx]`` of an OpenVINO runtime, whose IR does not convert back to ONNX: the same encoder built
    by the ONNX Runtime path (padding-free when asked, static int8 calibrated on the same batches when asked)."""

    def write(path, example_input):
        from optiforge.encoders.optimize import optimize_encoder

        session = config.session.model_copy(update={"precision": "f32"})
        twin = config.model_copy(update={"engine": "onnxruntime", "session": session})
        return optimize_encoder(encoder, twin, calibration, path=path).path

    return write


class EncoderSearchConfig(Config):
    """A ``search`` over runtime configurations (one ``encoder_runtime`` stage each): the fastest at
    ``batch_size`` meeting both fidelity floors ships; when none does, the float encoder ships."""

    candidates: list[EncoderRuntimeConfig] = Field(min_length=1)
    min_cosine: float = Field(0.995, gt=0.0, le=1.0, description="mean cosine to the float embeddings")
    min_neighbours_kept: float = Field(0.95, ge=0.0, le=1.0)
    batch_size: int = Field(32, ge=1, description="batch size the speed is measured at")
    timing_rounds: int = Field(3, ge=1, description="rounds over the validation batches, interleaved")
    keep: Literal["chosen", "front"] = "chosen"

    def search(self) -> SearchStageConfig:
        """The search this stage runs (the cosine floor is the metric's: its drop from the float encoder's 1)."""
        return SearchStageConfig(
            candidates=[[{"encoder_runtime": c.model_dump(mode="json", exclude_unset=True)}] for c in self.candidates],
            objective="latency",
            constraint={
                "max_metric_drop": round(1.0 - self.min_cosine, 12),
                "min_neighbours_kept": self.min_neighbours_kept,
            },
            timing={"batch": self.batch_size, "rounds": self.timing_rounds},
            keep=self.keep,
        )


def check_encoder_search(model: nn.Module, config: EncoderSearchConfig, data: TaskData) -> None:
    encoder = _encoder_of(model, "encoder_search")
    for index, candidate in enumerate(config.candidates):
        _check_runtime(encoder, candidate, f"encoder_search.candidates[{index}]")


@register_stage(
    "encoder_search",
    EncoderSearchConfig,
    "a search over encoder_runtime configurations: the fastest meeting the fidelity floors ships (else float)",
    check=check_encoder_search,
)
def encoder_search(model: nn.Module, config: EncoderSearchConfig, ctx: StageContext) -> StageOutput:
    from optiforge.stages.search import run_search

    _encoder_of(model, "encoder_search")
    return run_search(model, config.search(), ctx)[1]
