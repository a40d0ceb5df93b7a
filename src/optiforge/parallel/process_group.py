"""Joining PyTorch's process group: backend, device and world from the launcher.

``torch.distributed.run`` (``torchrun``) sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; without them (a plain
``python`` start) a strategy runs as a world of one process, so the same
recipe works with and without the launcher.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

from optiforge.errors import ConfigError

log = logging.getLogger("optiforge")

# Long enough for a slow first step on a busy machine, short enough that a lost peer ends the run.
TIMEOUT = timedelta(seconds=300)


def backend_for_device() -> str:
    """NCCL on CUDA, Gloo on CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def launched() -> bool:
    """Whether this process was started by torch.distributed.run (or another launcher that sets the world)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def restart_count() -> int:
    """How often the elastic launcher has restarted the workers (0 on the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def init_process_group() -> tuple[int, int]:
    """Join (or create) the default process group; return ``(rank, world_size)``."""
    if not dist.is_initialized():
        backend = backend_for_device()
        if torch.cuda.is_available():
            local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local_rank >= gpus:  # else CUDA's "invalid device ordinal" on the first call, in every worker
                raise ConfigError(
                    f"local rank {local_rank} has no GPU of its own: this machine has {gpus}, and NCCL gives "
                    "each process one; start at most that many processes per machine, or hide the GPUs "
                    "(CUDA_VISIBLE_DEVICES=) to run on the CPU over Gloo"
                )
            torch.cuda.set_device(local_rank)
        if launched():
            # The elastic agent keeps one store for all restarts, and a restarted worker would read the
            # dead workers' addresses from it (torch 2.13): each attempt gets keys of its own.
            store, rank, world_size = next(dist.rendezvous("env://", timeout=TIMEOUT))
            store = dist.PrefixStore(f"optiforge/attempt-{restart_count()}", store)
            dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=TIMEOUT)
        else:
            # No launcher: a world of one, with an in-process store (no port needed).
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=TIMEOUT)
        atexit.register(_destroy)
        if dist.get_rank() != 0:
            # Rank 0 reports progress; the others only speak up about problems.
            logging.getLogger("optiforge").setLevel(logging.WARNING)
    return dist.get_rank(), dist.get_world_size()


def _destroy() -> None:
    if dist.is_initialized():
        # Wrapped models (DDP's reducer, FSDP, DTensor) still hold work on the group; freed during interpreter
        # shutdown, after the group, they abort the process now and then ("terminate called without an
        # active exception", torch 2.13 with Gloo). Free them first.
        gc.collect()
        try:
            dist.destroy_process_group()
        except Exception:  # a peer may already be gone at exit; nothing left to release
            pass


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
