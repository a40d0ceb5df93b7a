"""``optiforge run --nproc N``: check that a recipe fits N processes, then start them.

The checks (mesh size, pipeline split, tensor plan, batch split, port, a GPU
per process) run in the launching process, before any worker starts; then
PyTorch's elastic launcher (``torch.distributed.run``) starts the workers,
restarts them up to ``parallel.max_restarts`` times when one dies, and stops
them all when the run ends or fails. Restarted workers resume from the last
checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from optiforge.data.builtin import build_data
from optiforge.errors import ConfigError
from optiforge.models.builtin import build_model
from optiforge.recipe import Recipe
from optiforge.training.optimizers import is_full_batch

log = logging.getLogger("optiforge")

# the launching process's PID, so a worker can tell whether its launcher ended before it asked to die with it
LAUNCHER_PID = "OPTIFORGE_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_launcher() -> None:
    """In a worker the elastic launcher started: have Linux send it SIGTERM when the launcher ends.

    The launcher (``torch.distributed.run``, torch 2.13) starts each worker with ``Popen`` in a session of
    its own, so neither Ctrl-C at the terminal nor the launcher's death (SIGKILL, a crash, a second Ctrl-C
    while it stops the workers) reaches them: without this they run on as orphans. The signal comes when
    the launcher's thread that started the worker ends, which is its main thread.
    """
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RESTART_COUNT" not in os.environ:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("could not ask to stop with the launcher (prctl errno %d)", ctypes.get_errno())
        return
    launcher = os.environ.get(LAUNCHER_PID)
    if launcher and os.getppid() != int(launcher):  # the launcher ended before the request above
        os.kill(os.getpid(), signal.SIGTERM)


def check_fits(recipe: Recipe, world_size: int) -> None:
    """Raise a :class:`ConfigError` when the recipe cannot run on ``world_size`` processes.

    Runs in the launching process, before any worker starts.
    """
    config = recipe.parallel
    strategy = config.strategy
    if world_size < 1:
        raise ConfigError(f"--nproc: {world_size} processes; give 1 or more")
    if strategy == "none":
        if world_size > 1:
            raise ConfigError(
                f"--nproc {world_size}: the recipe's parallel.strategy is 'none'; set --set parallel.strategy=ddp "
                "(or fsdp, pipeline, tensor, hybrid) to use several processes"
            )
        return
    data_world = world_size
    if recipe.train.batch_size == "auto":
        raise ConfigError("train.batch_size: 'auto' is measured in one process; give the global batch as a number")
    if strategy in ("pipeline", "tensor") or (strategy == "hybrid" and config.hybrid.inner != "shard"):
        from optiforge.parallel.sharded import hybrid_mesh_shape

        data = build_data(recipe.data)
        model = build_model(recipe.model, data)
        rows, columns = hybrid_mesh_shape(config, world_size) if strategy == "hybrid" else (1, world_size)
        if strategy == "pipeline" or config.hybrid.inner == "pipeline":
            from optiforge.parallel.pipeline import split_model

            pipeline = config.pipeline
            split_model(model, columns, pipeline.split_points)
            data_world = rows
            if pipeline.schedule == "1f1b" and pipeline.microbatches < columns:
                raise ConfigError(
                    f"parallel.pipeline.microbatches: the 1F1B schedule needs at least one microbatch per stage "
                    f"({columns}), got {pipeline.microbatches}"
                )
            per_pipeline = recipe.train.batch_size // rows
            if per_pipeline % pipeline.microbatches:
                raise ConfigError(
                    f"train.batch_size: each pipeline's batch of {per_pipeline} does not split into "
                    f"parallel.pipeline.microbatches {pipeline.microbatches}; "
                    f"use a multiple of {pipeline.microbatches * rows}"
                )
        else:
            from optiforge.parallel.tensor import tensor_plan

            tensor_plan(model, config, columns)
            data_world = rows
    elif strategy == "hybrid":
        from optiforge.parallel.sharded import hybrid_mesh_shape

        hybrid_mesh_shape(config, world_size)
    if recipe.train.batch_size % data_world and not is_full_batch(recipe.train.optimizer):
        raise ConfigError(
            f"train.batch_size: {recipe.train.batch_size} is the global batch and must split evenly over "
            f"{data_world} data-parallel processes; use a multiple of {data_world}"
        )


def check_gpus(world_size: int, device: str = "auto") -> None:
    """Raise a :class:`ConfigError` when ``world_size`` processes would share a GPU.

    Each worker takes ``cuda:LOCAL_RANK``, and NCCL refuses two processes on
    one GPU ("Duplicate GPU detected", NCCL 2.28). A recipe on ``device: cpu``
    runs its workers with the GPUs hidden (Gloo), so it needs none.
    """
    import torch

    from optiforge.parallel.process_group import backend_for_device

    gpus = torch.cuda.device_count()
    if device != "cpu" and backend_for_device() == "nccl" and world_size > gpus:
        raise ConfigError(
            f"--nproc {world_size}: on a CUDA machine each process takes a GPU of its own, and this one has {gpus}; "
            f"use --nproc {gpus} or fewer, or --set hardware.device=cpu to run the processes on the CPU over Gloo"
        )


def launcher_arguments(args: argparse.Namespace, port: int, max_restarts: int) -> list[str]:
    """The ``torch.distributed.run`` command line that runs ``optiforge run`` in every worker."""
    worker = ["-m", "optiforge.cli"] + (["-v"] if getattr(args, "verbose", False) else []) + ["run", args.recipe]
    for assignment in args.overrides:
        worker += ["--set", assignment]
    if args.out:
        worker += ["--out", args.out]
    if args.resume:
        worker.append("--resume")
    if args.no_progress:
        worker.append("--no-progress")
    return [
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(args.nproc),
        "--max-restarts",
        str(max_restarts),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--monitor-interval",
        "0.5",
        *worker,
    ]


def launch(args: argparse.Namespace, recipe: Recipe) -> int:
    """``optiforge run RECIPE --nproc N``: check that ``recipe`` fits N processes, then start them.

    The workers load the recipe again from ``args`` (with its ``--set`` overrides).
    """
    from optiforge.parallel.process_group import free_port, port_is_free

    check_fits(recipe, args.nproc)
    port = recipe.parallel.port
    if port is not None and not port_is_free(port):
        raise ConfigError(
            f"parallel.port: port {port} is already in use on this machine; choose another or "
            "leave it unset to take a free one"
        )
    check_gpus(args.nproc, recipe.hardware.device)
    if recipe.hardware.device == "cpu":
        # workers choose NCCL and a GPU each whenever CUDA is visible; a CPU recipe hides the GPUs from them
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    port = port or free_port()
    os.environ[LAUNCHER_PID] = str(os.getpid())
    # One thread per worker unless told otherwise: N workers must not oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(launcher_arguments(args, port, recipe.parallel.max_restarts)))
    except SignalException as signal:
        # Ctrl-C or a scheduler's SIGTERM: the launcher has already stopped every worker.
        print(f"optiforge: interrupted ({signal.sigval.name}); workers stopped", file=sys.stderr)
        return 130
    except ChildFailedError as error:
        failures = ", ".join(f"rank {rank} exit code {failure.exitcode}" for rank, failure in error.failures.items())
        print(f"optiforge: error: worker processes failed ({failures}); see their messages above", file=sys.stderr)
        # Status 2 when every worker stopped on a user mistake (each printed it), as a single process would.
        return 2 if all(failure.exitcode == 2 for failure in error.failures.values()) else 1
    return 0
