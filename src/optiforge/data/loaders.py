"""DataLoaders with reproducible shuffling.

Each epoch's order comes from a generator seeded with ``(seed, epoch)``, so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch, fixed by ``seed`` and ``epoch``."""

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.length = len(dataset)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def __len__(self) -> int:
        return self.length


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    workers: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader; with ``shuffle`` its sampler has ``set_epoch`` like DistributedSampler."""
    if sampler is None and shuffle:
        sampler = EpochShuffleSampler(dataset, seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        drop_last=drop_last,
        persistent_workers=workers > 0,
    )
