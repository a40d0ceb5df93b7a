"""Worker script for the DDP option tests: run under torch.distributed.run with 2 processes.

Records what ``parallel.ddp`` set on the DistributedDataParallel wrapper, and trains the tiny model with
gradient accumulation three ways: skipping the all-reduce on all but a step's last backward (the loop's
default), all-reducing every backward, and skipping it with a static graph. Every rank saves its weights and
the number of gradient buckets it all-reduced.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from parallel_worker import tiny_data, tiny_model, train_config
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

import optiforge
from optiforge.parallel.data_parallel import DataParallel
from optiforge.parallel.process_group import init_process_group

# 16 batches of 16 samples per process and epoch: windows of 3, 3, 3, 3, 3 and a last one of 1
ACCUMULATION_STEPS = 3


class CountingDataParallel(DataParallel):
    """DDP whose all-reduces are counted (one call of the communication hook per gradient bucket)."""

    def __init__(self, config: optiforge.ParallelConfig, synchronize_every_backward: bool = False) -> None:
        super().__init__(config)
        self.synchronize_every_backward = synchronize_every_backward
        self.reductions = 0

    def wrap(self, model, device):
        wrapped = super().wrap(model, device)

        def counting_hook(state, bucket):
            self.reductions += 1
            return allreduce_hook(state, bucket)

        wrapped.register_comm_hook(None, counting_hook)
        return wrapped

    def synchronizing(self, model, synchronize):
        if self.synchronize_every_backward:
            return contextlib.nullcontext()
        return super().synchronizing(model, synchronize)


def options(ddp: dict) -> dict:
    wrapped = DataParallel(optiforge.ParallelConfig(strategy="ddp", ddp=ddp)).wrap(tiny_model(), torch.device("cpu"))
    return {
        "bucket_bytes_cap": wrapped.bucket_bytes_cap,
        "gradient_as_bucket_view": wrapped.gradient_as_bucket_view,
        "static_graph": wrapped.static_graph,
    }


def accumulated(synchronize_every_backward: bool = False, static_graph: bool = False) -> dict:
    config = optiforge.ParallelConfig(strategy="ddp", ddp={"static_graph": static_graph})
    strategy = CountingDataParallel(config, synchronize_every_backward)
    train = train_config().model_copy(
        update={"gradients": optiforge.GradientConfig(accumulation_steps=ACCUMULATION_STEPS)}
    )
    result = optiforge.train(tiny_model(), tiny_data(), train, strategy=strategy, progress=False)
    return {"weights": result.model.state_dict(), "reductions": strategy.reductions}


def results() -> dict:
    return {
        "default": options({}),
        "chosen": options({"bucket_cap_mb": 1.5, "gradient_as_bucket_view": False, "static_graph": True}),
        "no_sync": accumulated(),
        "every_backward": accumulated(synchronize_every_backward=True),
        "static_graph": accumulated(static_graph=True),
    }


def main(out: Path) -> None:
    init_process_group()
    torch.save(results(), out / f"rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
