"""Validation sentences as the batches an encoder is judged and timed on."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from optiforge.encoders.module import pack, unpack


def batches_from(
    dataset: Dataset, batch_size: int, length_sorted: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Packed batches (each trimmed to its longest sentence) and the reference embeddings, in batch order.

    ``length_sorted`` batches the sentences longest first, as sentence-transformers'
    ``encode()`` does, so that each batch holds little padding.
    """
    inputs = torch.stack([dataset[index][0] for index in range(len(dataset))])  # (N, 2, longest)
    targets = torch.stack([dataset[index][1] for index in range(len(dataset))])
    if length_sorted:
        order = torch.argsort(inputs[:, 1].sum(dim=1), descending=True, stable=True)
        inputs, targets = inputs[order], targets[order]
    batches = [pack(*unpack(inputs[start : start + batch_size])) for start in range(0, len(inputs), batch_size)]
    return batches, targets
