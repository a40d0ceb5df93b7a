"""Scaling on this machine: 1 process against 2 (one thread each), DDP, FSDP and pipeline side by side.

    .venv/bin/python benchmarks/scaling.py            # about two minutes
    .venv/bin/python benchmarks/scaling.py --steps 20 # quicker, noisier

A compute-bound MLP (1024 wide) trains on synthetic data with a fixed global
batch. Each worker times whole optimizer steps after warm-up; DDP also times
the same step without gradient synchronisation (``no_sync``) and a bare
all-reduce of the gradient bytes, which together give the communication time
per step. All figures come from one run, so other load on the machine hits
every row alike; compare the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_model(width: int, depth: int):
    from torch import nn

    layers = [nn.Flatten(), nn.Linear(256, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def timed_steps(step, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    import optiforge
    from optiforge.parallel.strategies import strategy_for

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = optiforge.ParallelConfig(strategy=args.strategy, pipeline={"microbatches": args.microbatches})
    strategy = strategy_for(config)
    model = build_model(args.width, args.depth)
    per_process = strategy.per_process_batch(args.batch)
    inputs, targets = torch.randn(per_process, 256), torch.randint(0, 10, (per_process,))
    device = torch.device("cpu")
    wrapped = strategy.wrap(model, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    wrapped.train()

    def step() -> None:
        if strategy.runs_own_step:
            strategy.forward_backward(wrapped, inputs, targets, F.cross_entropy)
        else:
            F.cross_entropy(wrapped(inputs), targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result = {
        "strategy": args.strategy,
        "world_size": strategy.world_size,
        "per_process_batch": per_process,
        "step_s": statistics.median(timed_steps(step, args.steps, args.warmup)),
    }
    if args.strategy == "ddp" and strategy.world_size > 1:

        def local_step() -> None:
            with wrapped.no_sync():
                F.cross_entropy(wrapped(inputs), targets).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        result["step_without_sync_s"] = statistics.median(timed_steps(local_step, args.steps, args.warmup))
        gradients = torch.zeros(sum(parameter.numel() for parameter in model.parameters()))
        result["gradient_bytes"] = gradients.numel() * 4
        result["allreduce_s"] = statistics.median(
            timed_steps(lambda: dist.all_reduce(gradients), args.steps, args.warmup)
        )
    if strategy.is_main:
        Path(args.out).write_text(json.dumps(result))


def launch(strategy: str, nproc: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        worker_args = [
            "--worker",
            "--strategy",
            strategy,
            "--out",
            str(out),
            "--batch",
            str(args.batch),
            "--width",
            str(args.width),
            "--depth",
            str(args.depth),
            "--steps",
            str(args.steps),
            "--warmup",
            str(args.warmup),
            "--microbatches",
            str(args.microbatches),
        ]
        if nproc == 1 and strategy == "none":
            command = [sys.executable, __file__, *worker_args]
        else:
            command = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(nproc),
                __file__,
                *worker_args,
            ]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
        subprocess.run(
            command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600
        )
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=256, help="global batch (default 256)")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--microbatches", type=int, default=4)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="run every configuration this many times, interleaved; keep each one's fastest",
    )
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, MLP 256-{args.width}x{args.depth}-10, "
        f"global batch {args.batch}, {args.steps} timed steps (median), best of {args.rounds} interleaved rounds"
    )
    runs = [("none", 1), ("ddp", 2), ("fsdp", 2), ("pipeline", 2)]
    # Interleaved rounds: a burst of load from other jobs hits one round of every configuration, not one
    # configuration; each keeps its fastest round.
    rounds = [[launch(strategy, nproc, args) for strategy, nproc in runs] for _ in range(args.rounds)]
    rows = [min((round_[index] for round_ in rounds), key=lambda row: row["step_s"]) for index in range(len(runs))]
    base = rows[0]["step_s"]
    print(f"\n{'run':<22}{'step ms':>10}{'samples/s':>12}{'vs 1 proc':>11}")
    for row in rows:
        name = f"{row['strategy'] if row['strategy'] != 'none' else '1 process'} x{row['world_size']}"
        print(
            f"{name:<22}{row['step_s'] * 1e3:>10.1f}{args.batch / row['step_s']:>12,.0f}{base / row['step_s']:>10.2f}x"
        )
    ddp = rows[1]
    communication = ddp["step_s"] - ddp["step_without_sync_s"]
    print(
        f"\nDDP x2 per step: {ddp['step_s'] * 1e3:.1f} ms, of which gradient synchronisation "
        f"{communication * 1e3:.1f} ms ({communication / ddp['step_s']:.0%}); a bare all-reduce of the "
        f"{ddp['gradient_bytes'] / 1e6:.1f} MB of gradients takes {ddp['allreduce_s'] * 1e3:.1f} ms"
    )
    print(
        f"ideal 2-process step (half the 1-process compute): {base / 2 * 1e3:.1f} ms; "
        f"DDP's compute share took {ddp['step_without_sync_s'] * 1e3:.1f} ms"
    )
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
