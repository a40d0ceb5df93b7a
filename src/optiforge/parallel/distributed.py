"""What every multi-process strategy shares: the process group, barriers, metric sums."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Sampler

from optiforge.config import ParallelConfig
from optiforge.errors import ConfigError
from optiforge.parallel.process_group import device_type, init_process_group, restart_count
from optiforge.parallel.strategy import Strategy


class StridedSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``: the evaluation split, no sample twice, none left out."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class Distributed(Strategy):
    """A strategy over the default process group.

    ``data_rank``/``data_world`` say which share of the data this process
    takes; processes that hold parts of the same model replica (pipeline
    stages, tensor shards) share one data rank and see the same batches.
    """

    def __init__(self, config: ParallelConfig) -> None:
        self.config = config
        self.rank, self.world_size = init_process_group()
        self.data_rank, self.data_world = self.rank, self.world_size
        self.data_group: dist.ProcessGroup | None = None  # None: the whole world

    @property
    def restarted(self) -> bool:
        return restart_count() > 0

    def barrier(self) -> None:
        dist.barrier()

    def per_process_batch(self, batch_size: int) -> int:
        if batch_size % self.data_world:
            raise ConfigError(
                f"train.batch_size: {batch_size} is the global batch and must split evenly over "
                f"{self.data_world} data-parallel processes; use a multiple of {self.data_world}"
            )
        return batch_size // self.data_world

    def train_sampler(self, dataset: Dataset, seed: int) -> Sampler | None:
        if self.data_world == 1:
            return None
        # seed * 100_003 + epoch is the single-process loader's seed (data/loaders.py), so N processes
        # with batch b see, together, exactly the batches one process with batch N*b sees.
        # drop_last: every process gets the same number of samples, none repeated (at most N-1 left
        # out per epoch, a different few each epoch).
        return DistributedSampler(
            dataset,
            num_replicas=self.data_world,
            rank=self.data_rank,
            shuffle=True,
            seed=seed * 100_003,
            drop_last=True,
        )

    def eval_sampler(self, dataset: Dataset) -> Sampler | None:
        if self.data_world == 1:
            return None
        return StridedSampler(len(dataset), self.data_rank, self.data_world)

    def reduce_sums(self, sums: dict[str, float]) -> dict[str, float]:
        if self.data_world == 1:
            return sums
        # A process whose share was empty has no keys; agree on the union so the all-reduce matches up.
        gathered: list[list[str] | None] = [None] * self.world_size
        dist.all_gather_object(gathered, sorted(sums))
        keys = sorted({key for names in gathered for key in (names or [])})
        values = torch.tensor([float(sums.get(key, 0.0)) for key in keys], dtype=torch.float64, device=device_type())
        dist.all_reduce(values, group=self.data_group)
        return dict(zip(keys, values.tolist(), strict=True))
