"""Scaling on this machine: 1 process against 2 (one thread each), DDP, FSDP and pipeline side by side.

    .venv/bin/python benchmarks/scaling.py            # about two minutes
    .venv/bin/python benchmarks/scaling.py --steps 20 # quicker, noisier
    .venv/bin/python benchmarks/scaling.py --sweep    # where DDP pays: width x batch, and DDP's options
    .venv/bin/python benchmarks/scaling.py --sweep --quick  # a few seconds: checks the script, not the machine

A compute-bound MLP (1024 wide) trains on synthetic data with a fixed global
batch. Each worker times whole optimizer steps after warm-up; DDP also times
the same step without gradient synchronisation (``no_sync``) and a bare
all-reduce of the gradient bytes, which together give the communication time
per step. All figures come from one run, so other load on the machine hits
every row alike; compare the ratios, not the absolute times.

``--sweep`` asks where data parallelism pays on CPU. A step's compute grows
with batch x parameters, its gradient all-reduce with parameters alone, so
DDP on 2 processes should lose on narrow models and small batches and win on
large batches. It prints DDP's speedup over 1 process for every (width, global
batch) cell, then DDP's options (``parallel.ddp.bucket_cap_mb``,
``gradient_as_bucket_view``) side by side on the ``--width``/``--batch`` cell.
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
    config = optiforge.ParallelConfig(
        strategy=args.strategy,
        pipeline={"microbatches": args.microbatches},
        ddp={"bucket_cap_mb": args.bucket_cap_mb, "gradient_as_bucket_view": args.gradient_as_bucket_view},
    )
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
    if args.strategy == "ddp" and strategy.world_size > 1 and not args.step_only:

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


def launch(strategy: str, nproc: int, args: argparse.Namespace, **changes) -> dict:
    """One configuration in fresh processes; ``changes`` replace arguments (width, batch, DDP options)."""
    args = argparse.Namespace(**{**vars(args), **changes})
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
            "--bucket-cap-mb",
            str(args.bucket_cap_mb),
            "--gradient-as-bucket-view",
            str(args.gradient_as_bucket_view).lower(),
        ]
        if args.step_only:
            worker_args.append("--step-only")
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
    parser.add_argument("--bucket-cap-mb", type=float, default=25.0, help="DDP's gradient bucket (default 25)")
    parser.add_argument(
        "--gradient-as-bucket-view", type=_boolean, default=True, help="DDP: gradients as views into buckets"
    )
    parser.add_argument("--step-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help="DDP's speedup over width x batch, and its options")
    parser.add_argument("--widths", type=_integers, default=[256, 1024, 2048], help="sweep: e.g. 256,1024,2048")
    parser.add_argument("--batches", type=_integers, default=[32, 256, 1024], help="sweep: global batches")
    parser.add_argument("--buckets", type=_numbers, default=[1.0, 25.0, 100.0], help="sweep: bucket_cap_mb values")
    parser.add_argument("--quick", action="store_true", help="sweep: tiny sizes and few steps, to check the script")
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
    if args.quick:
        args = argparse.Namespace(
            **{
                **vars(args),
                **dict(widths=[32, 64], batches=[16, 64], buckets=[1.0, 25.0], width=64, batch=64),
                **dict(steps=3, warmup=1, rounds=1),
            }
        )
    if args.sweep:
        sweep(args)
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


def _integers(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",")]


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"true or false, not {text!r}")
    return text.lower() == "true"


def _fastest(rounds: list[list[dict]]) -> list[dict]:
    """Each configuration's fastest round (rounds hold the configurations in the same order)."""
    return [min((round_[index] for round_ in rounds), key=lambda row: row["step_s"]) for index in range(len(rounds[0]))]


def parameter_count(width: int, depth: int) -> int:
    return sum(parameter.numel() for parameter in build_model(width, depth).parameters())


def sweep(args: argparse.Namespace) -> None:
    import torch

    cells = [(width, batch) for width in args.widths for batch in args.batches]
    options = [(bucket, view) for bucket in args.buckets for view in (True, False)]
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, MLP 256-<width>x{args.depth}-10, "
        f"{args.steps} timed steps (median), best of {args.rounds} interleaved rounds"
    )
    # Every configuration once per round, one after the other: a burst of load lands on one round of all of
    # them, and each keeps its fastest round.
    step_only = {"step_only": True}
    grid_rounds, option_rounds = [], []
    for _ in range(args.rounds):
        grid_round = []
        for width, batch in cells:
            grid_round.append(launch("none", 1, args, width=width, batch=batch, **step_only))
            grid_round.append(launch("ddp", 2, args, width=width, batch=batch, **step_only))
        grid_rounds.append(grid_round)
        option_round = [launch("none", 1, args, **step_only)]
        for bucket, view in options:
            option_round.append(launch("ddp", 2, args, bucket_cap_mb=bucket, gradient_as_bucket_view=view, **step_only))
        option_rounds.append(option_round)
    grid = _fastest(grid_rounds)

    print("\nDDP 2 processes x 1 thread against 1 process x 1 thread: step-time speedup (> 1.00x: DDP pays)")
    print(f"{'width':>7}{'parameters':>12}{'gradient MB':>13}" + "".join(f"{f'batch {b}':>12}" for b in args.batches))
    for row, width in enumerate(args.widths):
        parameters = parameter_count(width, args.depth)
        speedups = []
        for column in range(len(args.batches)):
            single, ddp = grid[2 * (row * len(args.batches) + column) : 2 * (row * len(args.batches) + column) + 2]
            speedups.append(single["step_s"] / ddp["step_s"])
        print(
            f"{width:>7}{parameters:>12,}{parameters * 4 / 1e6:>13.1f}"
            + "".join(f"{speedup:>11.2f}x" for speedup in speedups)
        )

    fastest_options = _fastest(option_rounds)
    single = fastest_options[0]["step_s"]
    print(f"\nDDP options on width {args.width}, global batch {args.batch} (1 process: {single * 1e3:.1f} ms per step)")
    print(f"{'bucket_cap_mb':>14}{'gradient_as_bucket_view':>25}{'step ms':>10}{'vs 1 proc':>11}")
    for (bucket, view), row in zip(options, fastest_options[1:], strict=True):
        print(f"{bucket:>14g}{str(view).lower():>25}{row['step_s'] * 1e3:>10.1f}{single / row['step_s']:>10.2f}x")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
