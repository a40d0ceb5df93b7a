"""ONNX export of a sentence encoder: ``input_ids``, ``attention_mask`` → ``sentence_embedding``.

Both inputs are int64 ``(batch, sequence)`` with both axes dynamic; the
output is ``(batch, hidden)``, mean-pooled and L2-normalised inside the graph,
so any ONNX runtime produces finished embeddings without optiforge.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.encoders.module import SentenceEncoder
from optiforge.exporters.onnx import register_onnx_exporter

INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAME = "sentence_embedding"
DYNAMIC_AXES = {
    "input_ids": {0: "batch", 1: "sequence"},
    "attention_mask": {0: "batch", 1: "sequence"},
    OUTPUT_NAME: {0: "batch"},
}


class _TwoInputs(nn.Module):
    """Presents ``encode(input_ids, attention_mask)`` as ``forward`` for the tracer."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(input_ids, attention_mask)


def example_inputs(example: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two int64 tensors for tracing, from a packed batch, a pair, or nothing.

    Two sentences of different lengths make the tracer keep padding handling general.
    """
    from optiforge.encoders.module import unpack

    if isinstance(example, torch.Tensor) and example.dim() == 3:
        input_ids, attention_mask = unpack(example)
        if input_ids.shape[0] >= 2:
            return input_ids.long(), attention_mask.long()
    elif isinstance(example, (tuple, list)) and len(example) == 2:
        return example[0].long(), example[1].long()
    input_ids = torch.tensor([[101, 7592, 2088, 2003, 2307, 102], [101, 7592, 102, 0, 0, 0]])
    return input_ids, (input_ids != 0).long()


@contextmanager
def eager_attention(encoder: nn.Module):
    """Trace attention as plain MatMul/Softmax, the pattern ONNX Runtime fuses into one ``Attention`` op.

    transformers 5 runs BERT attention through ``scaled_dot_product_attention``
    by default; its traced graph is not recognised by ONNX Runtime's fusion.
    """
    transformer = getattr(encoder, "transformer", None)
    config = getattr(transformer, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    switch = previous not in (None, "eager") and hasattr(transformer, "set_attn_implementation")
    if switch:
        transformer.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            transformer.set_attn_implementation(previous)


def export_sentence_encoder(encoder: nn.Module, path: str | Path, example: Any = None) -> Path:
    """Write ``encoder`` (a :class:`SentenceEncoder`) as a float ONNX graph with the two named inputs."""
    from optiforge.exporters.onnx import export_onnx

    wrapper = _TwoInputs(encoder).train(encoder.training)  # export_onnx restores the wrapper's mode afterwards
    with torch.no_grad(), eager_attention(encoder):
        return export_onnx(
            wrapper,
            path,
            example_inputs(example),
            input_names=INPUT_NAMES,
            output_names=[OUTPUT_NAME],
            dynamic_axes=DYNAMIC_AXES,
        )


@register_onnx_exporter(SentenceEncoder)
def _export_format(model: SentenceEncoder, path: Path, example_input: Any = None) -> Path:
    """``export: [onnx]`` of a sentence encoder: two named inputs, ``sentence_embedding`` out."""
    return export_sentence_encoder(model, path, example_input)
