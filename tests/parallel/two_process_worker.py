"""Worker script for every two-process measurement: run under torch.distributed.run with 2 processes.

The equivalence, DDP option and FSDP accumulation measurements share one launch: starting the processes and
their process group takes longer than the tiny trainings. Every rank saves ``rank<N>.pt`` in the given folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ddp_options_worker
import fsdp_accumulation_worker
import parallel_worker
import torch
import torch.distributed as dist

from optiforge.parallel.process_group import init_process_group


def main(folder: Path) -> None:
    init_process_group()
    results = {
        "equivalence": parallel_worker.two_process_results(),
        "ddp_options": ddp_options_worker.results(),
        "fsdp_accumulation": fsdp_accumulation_worker.results(),
    }
    torch.save(results, folder / f"rank{dist.get_rank()}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
