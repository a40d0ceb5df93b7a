"""An exported sentence encoder run by ONNX Runtime, called like the PyTorch one."""

from __future__ import annotations

from pathlib import Path

import torch

from optiforge.encoders.module import unpack
from optiforge.errors import ModelError
from optiforge.exporters.onnx import OnnxModule


class OnnxSentenceEncoder(OnnxModule):
    """ONNX Runtime session over an ONNX sentence encoder (``input_ids``, ``attention_mask``).

    ``forward`` takes packed ``(batch, 2, sequence)`` inputs (what the
    ``sentences`` dataset yields) or the two tensors, and returns the
    ``(batch, hidden)`` embeddings as a float tensor. It exports (``export: [onnx]``)
    as the file it already is.
    """

    def __init__(self, path: str | Path, threads: int | None = None, spinning: bool = False) -> None:
        super().__init__(path, threads, spinning)
        if sorted(self.input_names) != ["attention_mask", "input_ids"]:
            raise ModelError(f"onnx: '{self.path}' takes {self.input_names}, not input_ids and attention_mask")

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            inputs, attention_mask = unpack(inputs)
        feeds = {
            "input_ids": inputs.detach().cpu().long().numpy(),
            "attention_mask": attention_mask.detach().cpu().long().numpy(),
        }
        (embeddings,) = self._runtime.run(["sentence_embedding"], feeds)
        return torch.from_numpy(embeddings)
