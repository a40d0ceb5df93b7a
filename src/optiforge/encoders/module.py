"""The sentence encoder as one module: transformer → mean pooling → L2 norm.

The training loop and ``measure`` call ``model(inputs)`` with one tensor, so
a batch travels as one int64 tensor ``(batch, 2, sequence)`` holding
``input_ids`` and ``attention_mask`` (:func:`pack`); the module unpacks it.
Called with two tensors it takes ``(input_ids, attention_mask)`` like the
exported ONNX graph.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from optiforge.errors import ModelError


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``(batch, sequence)`` ids and mask → one ``(batch, 2, sequence)`` int64 tensor."""
    return torch.stack([input_ids.long(), attention_mask.long()], dim=1)


def unpack(packed: torch.Tensor, trim: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack`; ``trim`` drops padding columns no sentence uses.

    A dataset pads every sentence to its longest one; trimming to the batch's
    longest keeps a batch as cheap as dynamic padding (what sentence-transformers
    does). Masked positions do not change the pooled result, so trimming is exact.
    """
    if packed.dim() != 3 or packed.shape[1] != 2:
        raise ModelError(
            f"sentence encoder: expected packed inputs (batch, 2, sequence), got shape {tuple(packed.shape)}"
        )
    input_ids, attention_mask = packed[:, 0], packed[:, 1]
    if trim and attention_mask.numel():
        length = max(1, int(attention_mask.sum(dim=1).max()))
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
    return input_ids, attention_mask


def mean_pool(token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, exactly as sentence-transformers' ``Pooling`` (mean mode)."""
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)  # (B, T, 1)
    summed = (token_embeddings * mask).sum(dim=1)  # (B, H)
    counts = mask.sum(dim=1).clamp(min=1e-9)  # sentence-transformers' clamp, for all-padding rows
    return summed / counts


class SentenceEncoder(nn.Module):
    """A transformer whose mean-pooled, L2-normalised output is the sentence embedding.

    >>> import torch
    >>> from optiforge.encoders import SentenceEncoder, pack
    >>> class Tiny(torch.nn.Module):  # stands in for a transformers model
    ...     def __init__(self):
    ...         super().__init__(); self.embed = torch.nn.Embedding(10, 4)
    ...     def forward(self, input_ids, attention_mask):
    ...         return type("Out", (), {"last_hidden_state": self.embed(input_ids)})()
    >>> encoder = SentenceEncoder(Tiny(), max_length=8)
    >>> ids, mask = torch.tensor([[1, 2, 0]]), torch.tensor([[1, 1, 0]])
    >>> round(float(encoder(pack(ids, mask)).detach().norm()), 4)
    1.0
    """

    def __init__(
        self, transformer: nn.Module, max_length: int, normalize: bool = True, folder: str | Path | None = None
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.max_length = max_length
        self.normalize = normalize
        self.folder = str(folder) if folder is not None else None

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embeddings = mean_pool(hidden, attention_mask)
        return F.normalize(embeddings, p=2, dim=1) if self.normalize else embeddings

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            inputs, attention_mask = unpack(inputs, trim=not torch.jit.is_tracing())
        return self.encode(inputs, attention_mask)

    @property
    def embedding_dim(self) -> int:
        return int(self.transformer.config.hidden_size)

    def extra_repr(self) -> str:
        return f"max_length={self.max_length}, pooling=mean, normalize={self.normalize}"
