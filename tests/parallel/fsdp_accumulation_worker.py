"""Worker script for the FSDP accumulation test: run under torch.distributed.run with 2 processes.

Trains the tiny model under FSDP with gradient accumulation twice: reducing gradients only on a step's last
backward (the loop's default) and on every backward. Every rank saves its weights and the number of
reduce-scatters it ran.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from parallel_worker import tiny_data, tiny_model, train_config

import optiforge
from optiforge.parallel.process_group import init_process_group
from optiforge.parallel.sharded import FullyShardedDataParallel

# 16 batches of 16 samples per process and epoch: windows of 3, 3, 3, 3, 3 and a last one of 1
ACCUMULATION_STEPS = 3


class SynchronizingEveryBackward(FullyShardedDataParallel):
    def synchronizing(self, model, synchronize):
        return contextlib.nullcontext()


@contextlib.contextmanager
def counting_reduce_scatters():
    """FSDP2 reduces each sharded block's gradients with one ``reduce_scatter_single`` call."""
    calls = {"count": 0}
    original = dist.reduce_scatter_single

    def counted(*args, **kwargs):
        calls["count"] += 1
        return original(*args, **kwargs)

    dist.reduce_scatter_single = counted
    try:
        yield calls
    finally:
        dist.reduce_scatter_single = original


def accumulated(strategy_type: type[FullyShardedDataParallel]) -> dict:
    strategy = strategy_type(optiforge.ParallelConfig(strategy="fsdp"))
    train = train_config().model_copy(
        update={"gradients": optiforge.GradientConfig(accumulation_steps=ACCUMULATION_STEPS)}
    )
    with counting_reduce_scatters() as calls:
        result = optiforge.train(tiny_model(), tiny_data(), train, strategy=strategy, progress=False)
    return {"weights": result.model.state_dict(), "reduce_scatters": calls["count"]}


def results() -> dict:
    return {
        "skipping": accumulated(FullyShardedDataParallel),
        "every_backward": accumulated(SynchronizingEveryBackward),
    }


def main(out: Path) -> None:
    init_process_group()
    torch.save(results(), out / f"rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
