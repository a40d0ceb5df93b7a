"""A sentence encoder in OpenVINO: ``input_ids``, ``attention_mask`` → ``sentence_embedding``, as in ONNX.

Both inputs are int64 ``(batch, sequence)`` with both axes dynamic; the
output is pooled and L2-normalised inside the graph. The padding-free
encoder (:func:`~optiforge.encoders.unpadded.remove_padding`) converts too:
its ``optiforge::padded_attention`` operator becomes OpenVINO's standard
``ScaledDotProductAttention`` through a conversion extension, so the IR runs
in plain OpenVINO. int8 is NNCF's post-training quantization with its
transformer preset, calibrated on packed sentence batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from optiforge.encoders.module import SentenceEncoder, unpack
from optiforge.encoders.onnx_export import INPUT_NAMES, OUTPUT_NAME, _TwoInputs, example_inputs
from optiforge.errors import ConfigError, ModelError
from optiforge.exporters.openvino import OpenVinoModule, convert, register_openvino_exporter, save_ir

SCHEMES = ("float", "int8_static")


def _padded_attention(context: Any) -> list:
    """``optiforge::padded_attention(query, key, value, mask, heads)`` as OpenVINO opset-13 operations."""
    import openvino.opset13 as ops

    query, key, value, mask = (context.get_input(index) for index in range(4))
    heads = int(context.get_values_from_const_input(4))

    def indices(*values: int):
        return ops.constant(np.array(values, dtype=np.int64))

    def split_heads(tensor: Any) -> Any:  # (B, L, H) -> (B, h, L, d)
        shaped = ops.reshape(tensor, indices(0, 0, heads, -1), special_zero=True)
        return ops.transpose(shaped, indices(0, 2, 1, 3))

    keys = ops.unsqueeze(ops.convert(mask, "boolean"), indices(1, 2))  # (B, 1, 1, L): which keys count
    context_layer = ops.scaled_dot_product_attention(
        split_heads(query), split_heads(key), split_heads(value), keys, causal=False
    )
    merged = ops.transpose(context_layer, indices(0, 2, 1, 3))
    return [ops.reshape(merged, indices(0, 0, -1), special_zero=True).output(0)]


def conversion_extensions() -> list:
    """OpenVINO conversion extensions for optiforge's custom operators."""
    from openvino.frontend import ConversionExtension

    return [ConversionExtension("optiforge::padded_attention", _padded_attention)]


def _feeds(batch: Any) -> dict[str, torch.Tensor]:
    if isinstance(batch, torch.Tensor) and batch.dim() == 3:
        input_ids, attention_mask = unpack(batch)
    elif isinstance(batch, (tuple, list)) and len(batch) == 2 and all(torch.is_tensor(item) for item in batch):
        input_ids, attention_mask = batch
    else:
        raise ConfigError(
            "openvino encoder: calibration batches must be packed (batch, 2, sequence) tensors "
            "or (input_ids, attention_mask) pairs"
        )
    return {"input_ids": input_ids.long(), "attention_mask": attention_mask.long()}


def convert_sentence_encoder(encoder: nn.Module, example: Any = None):
    """``encoder`` as an ``openvino.Model`` with the two named int64 inputs and ``sentence_embedding`` out."""
    if not isinstance(encoder, SentenceEncoder):
        raise ModelError(f"openvino encoder: needs a SentenceEncoder, got {type(encoder).__name__}")
    wrapper = _TwoInputs(encoder).eval()
    converted = convert(
        wrapper, example_inputs(example), [OUTPUT_NAME], conversion_extensions(), dynamic_batch_only=False
    )
    names = [item.get_any_name() for item in converted.inputs]
    if names != INPUT_NAMES:
        raise ModelError(f"openvino encoder: the converted graph takes {names}, not {INPUT_NAMES}")
    return converted


def export_sentence_encoder_openvino(
    encoder: nn.Module,
    path: str | Path,
    example: Any = None,
    *,
    scheme: str = "float",
    calibration: Sequence[Any] = (),
) -> Path:
    """Write ``encoder`` as OpenVINO IR at ``path`` (``.xml`` + ``.bin``): float, or int8 by NNCF (``int8_static``)."""
    if scheme not in SCHEMES:
        raise ConfigError(f"openvino encoder: scheme '{scheme}' is not offered; choose one of {', '.join(SCHEMES)}")
    if scheme == "int8_static" and not calibration:
        raise ConfigError("openvino encoder: scheme 'int8_static' needs calibration batches of sentences")
    if example is None and calibration:
        example = calibration[0]
    converted = convert_sentence_encoder(encoder, example)
    if scheme == "int8_static":
        from optiforge.quantization.openvino_engine import quantize_ir

        converted = quantize_ir(
            converted, "int8_static", calibration=[_feeds(batch) for batch in calibration], transformer=True
        )
    return save_ir(converted, path)


class OpenVinoSentenceEncoder(OpenVinoModule):
    """A compiled OpenVINO sentence encoder, called like the PyTorch one.

    ``forward`` takes packed ``(batch, 2, sequence)`` inputs or the two
    tensors and returns the ``(batch, hidden)`` embeddings; ``precision`` is
    ``f32`` or ``bf16`` (where the CPU has bf16 units).
    """

    def __init__(self, path: str | Path, precision: str = "f32", threads: int | None = None) -> None:
        super().__init__(path, precision, threads)
        if sorted(self.input_names) != sorted(INPUT_NAMES):
            raise ModelError(f"openvino: '{self.path}' takes {self.input_names}, not input_ids and attention_mask")

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            inputs, attention_mask = unpack(inputs)
        feeds = {
            "input_ids": inputs.detach().cpu().long().numpy(),
            "attention_mask": attention_mask.cpu().long().numpy(),
        }
        return self.run(feeds)[0]


def openvino_sentence_encoder(
    encoder: nn.Module,
    path: str | Path,
    *,
    precision: str = "f32",
    scheme: str = "float",
    calibration: Sequence[Any] = (),
    example: Any = None,
    threads: int | None = None,
) -> OpenVinoSentenceEncoder:
    """Convert (and for ``int8_static`` quantize) ``encoder``, write the IR at ``path`` and compile it."""
    written = export_sentence_encoder_openvino(encoder, path, example, scheme=scheme, calibration=calibration)
    return OpenVinoSentenceEncoder(written, precision, threads)


@register_openvino_exporter(SentenceEncoder)
def _export_format(model: SentenceEncoder, path: Path, example_input: Any = None) -> Path:
    """``export: [openvino]`` of a sentence encoder: two named inputs, ``sentence_embedding`` out."""
    return export_sentence_encoder_openvino(model, path, example_input)
