"""Batches sliced from a dataset held whole on the device, without a DataLoader.

For a dataset of tensors (a ``TensorDataset`` or a ``Subset`` of one) the
inputs and targets are moved to the device once and each batch is an index
into them: no per-sample ``__getitem__``, no collation, no host-to-device copy
per step. The order is the one :class:`~optiforge.data.loaders.EpochShuffleSampler`
gives, so the batches, and a resumed run, are exactly those of the DataLoader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset

from optiforge.data.loaders import EpochShuffleSampler, make_loader

MEMORY_SHARE = 0.25  # at most this share of the free device (or host) memory goes to the dataset


def _base(dataset: Dataset) -> TensorDataset | None:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2 else None


def dataset_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(inputs, targets)`` of a tensor dataset or a subset of one, or ``None`` for any other kind."""
    if isinstance(dataset, TensorDataset):
        return (dataset.tensors[0], dataset.tensors[1]) if len(dataset.tensors) == 2 else None
    if isinstance(dataset, Subset):
        base = dataset_tensors(dataset.dataset)
        if base is not None:
            indices = torch.as_tensor(dataset.indices, dtype=torch.long)
            return base[0][indices], base[1][indices]
    return None


def fits(dataset: Dataset, device: torch.device) -> bool:
    """Whether a copy of the dataset's tensors takes at most ``MEMORY_SHARE`` of the free memory."""
    base = _base(dataset)
    if base is None:
        return False
    row_bytes = sum(tensor[0].numel() * tensor.element_size() for tensor in base.tensors)
    if device.type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(device)
    else:
        try:
            free_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not POSIX: the data is in host memory already
            return device.type == "cpu"
    return len(dataset) * row_bytes <= MEMORY_SHARE * free_bytes


class TensorBatches:
    """Iterates ``(inputs, targets)`` batches; ``sampler.set_epoch`` picks the epoch's order."""

    def __init__(
        self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, *, shuffle: bool = False, seed: int = 0
    ) -> None:
        self.inputs, self.targets = inputs, targets
        self.batch_size = batch_size
        self.sampler = EpochShuffleSampler(inputs, seed) if shuffle else None

    def __len__(self) -> int:
        return math.ceil(len(self.inputs) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A DataLoader draws a base seed for its workers from the global generator each time it is iterated;
        # drawing it here too keeps dropout and every later random number identical to the DataLoader path.
        torch.empty((), dtype=torch.int64).random_()
        if self.sampler is None:
            for start in range(0, len(self.inputs), self.batch_size):
                yield self.inputs[start : start + self.batch_size], self.targets[start : start + self.batch_size]
            return
        order = torch.as_tensor(list(self.sampler), dtype=torch.long, device=self.inputs.device)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            yield self.inputs[batch], self.targets[batch]


def make_batches(
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    *,
    on_device: bool,
    shuffle: bool = False,
    seed: int = 0,
    sampler: Sampler | None = None,
    workers: int = 0,
) -> TensorBatches | DataLoader:
    """The fast path when asked for and possible (tensors that fit, no sampler or workers), else a DataLoader."""
    if not (on_device and sampler is None and workers == 0 and fits(dataset, device)):
        return make_loader(dataset, batch_size, shuffle=shuffle, seed=seed, sampler=sampler, workers=workers)
    inputs, targets = (t.to(device) for t in dataset_tensors(dataset))
    return TensorBatches(inputs, targets, batch_size, shuffle=shuffle, seed=seed)
