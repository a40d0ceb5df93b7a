"""The OpenVINO form of ``encoder_runtime`` (``engine: openvino``): padding-free, float or NNCF int8.

The encoder (made padding-free when ``remove_padding`` asks) is converted to OpenVINO IR and, for
``int8_static``, quantized by NNCF's post-training quantization with its transformer preset, calibrated
on the same packed training batches ONNX Runtime's static int8 uses. The compiled model runs the ops that
are not int8 in ``session.precision`` (``auto``: bf16 where the CPU has bf16 units, else f32).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from optiforge.errors import ConfigError
from optiforge.imports import optional_import


def resolved_precision(precision: str) -> str:
    """``f32`` or ``bf16``: ``auto`` is bf16 where OpenVINO finds bf16 units on this CPU."""
    if precision != "auto":
        return precision
    from optiforge.exporters.openvino import bf16_supported

    return "bf16" if bf16_supported() else "f32"


def openvino_runtime(
    encoder: nn.Module, config: object, calibration: Sequence[torch.Tensor], path: str | Path
) -> nn.Module:
    """``encoder`` as a compiled :class:`~optiforge.encoders.openvino_export.OpenVinoSentenceEncoder` whose IR
    is written beside ``path`` (``<stem>.xml`` + ``.bin``); ``config`` is an ``EncoderRuntimeConfig``."""
    optional_import("openvino", "encoder_runtime engine 'openvino'")
    if config.quantize == "int8_static":
        optional_import("nncf", "encoder_runtime engine 'openvino' with quantize 'int8_static'")
    from optiforge.encoders.openvino_export import openvino_sentence_encoder
    from optiforge.exporters.openvino import check_precision

    precision = resolved_precision(config.session.precision)
    check_precision(precision)  # before converting: bf16 on a CPU without bf16 units is refused
    batches = list(calibration)[: config.calibration_batches]
    if config.quantize == "int8_static" and not batches:
        raise ConfigError("encoder runtime: engine 'openvino' with quantize 'int8_static' needs calibration batches")
    model = encoder
    if config.remove_padding:
        from optiforge.encoders.unpadded import remove_padding

        model = remove_padding(encoder)
    scheme = "float" if config.quantize == "none" else "int8_static"
    target = Path(path).with_suffix(".xml")
    target.parent.mkdir(parents=True, exist_ok=True)
    return openvino_sentence_encoder(
        model,
        target,
        scheme=scheme,
        calibration=batches,
        precision=precision,
        example=batches[0] if batches else None,
        threads=config.session.threads,
    )
