"""An exported sentence encoder run by ONNX Runtime, called like the PyTorch one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.encoders.module import unpack
from optiforge.errors import ModelError
from optiforge.exporters.onnx import session_options


def open_session(path: str | Path, threads: int | None = None, spinning: bool = False):
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(
            str(path), session_options(threads, spinning), providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise ModelError(f"onnx: ONNX Runtime cannot load '{path}': {str(error).splitlines()[0]}") from None


class OnnxSentenceEncoder(nn.Module):
    """ONNX Runtime session over an ONNX sentence encoder (``input_ids``, ``attention_mask``).

    ``forward`` takes packed ``(batch, 2, sequence)`` inputs (what the
    ``sentences`` dataset yields) or the two tensors, and returns the
    ``(batch, hidden)`` embeddings as a float tensor.
    """

    memory_outside_torch = True  # ONNX Runtime allocates its own; peak_memory_bytes is not measured

    def __init__(
        self, path: str | Path, threads: int | None = None, info: dict | None = None, spinning: bool = False
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.spinning = spinning
        self.info = dict(info or {})
        self._session = open_session(self.path, threads, spinning)
        names = [item.name for item in self._session.get_inputs()]
        if sorted(names) != ["attention_mask", "input_ids"]:
            raise ModelError(f"onnx: '{self.path}' takes {names}, not input_ids and attention_mask")

    def __getstate__(self) -> dict:  # an InferenceSession can be neither copied nor pickled
        state = self.__dict__.copy()
        state.pop("_session", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._session = open_session(self.path, self.threads, self.spinning)

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            inputs, attention_mask = unpack(inputs)
        feeds = {
            "input_ids": inputs.detach().cpu().long().numpy(),
            "attention_mask": attention_mask.detach().cpu().long().numpy(),
        }
        (embeddings,) = self._session.run(["sentence_embedding"], feeds)
        return torch.from_numpy(embeddings)

    def optiforge_onnx_export(self, path: str | Path, example_input: Any = None) -> Path:
        """The ``onnx`` exporter's hook: the file is already ONNX, so copy it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.resolve() != self.path.resolve():
            temporary = path.with_name(path.name + ".partial")
            shutil.copyfile(self.path, temporary)
            temporary.replace(path)
        return path

    def extra_repr(self) -> str:
        return f"path='{self.path}'"
