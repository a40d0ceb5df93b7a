"""Training throughput and inference latency on one CUDA GPU: fp32, bf16 autocast and bf16 + torch.compile.

    python benchmarks/gpu.py                    # 75-95 s on an H100, a third of it compiling
    python benchmarks/gpu.py --rounds 3 --steps 10   # quicker, noisier

Training: each model takes optimizer steps made of optiforge's own pieces, in
the order the training loop runs them: the built-in builders (``mlp``,
``cnn1d``, scaled up so the GPU has work to do), ``build_optimizer`` (AdamW),
``Precision`` (autocast), ``compile_model`` and the task's loss; forward under
autocast, loss in fp32, backward, optimizer step, ``loss.item()`` every step as
the loop does. Batches are synthetic and already on the GPU, so the figures
are the GPU's, not the data loader's. The configurations start from the same
weights and run in interleaved rounds (warm-up, and torch.compile's
compilation, excluded); each round times ``--steps`` steps between two
``torch.cuda.synchronize()`` calls and each configuration keeps its median
round.

Inference: ``optiforge.measure`` on the same models (batch-1 latency, median
and p95; throughput at a large batch), fp32 eager against bf16 autocast and
bf16 autocast compiled.

fp32 means PyTorch's defaults: TF32 off for matrix products, on for cuDNN
convolutions. Needs a CUDA device; elsewhere it exits with a message.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import TensorDataset

import optiforge
from optiforge.hardware import Precision, compile_model
from optiforge.models.builtin import cnn1d, mlp
from optiforge.tasks import task_for
from optiforge.training.optimizers import build_optimizer

CONFIGS = {
    "fp32": optiforge.HardwareConfig(device="cuda", precision="fp32"),
    "bf16": optiforge.HardwareConfig(device="cuda", precision="bf16"),
    "bf16 + compile": optiforge.HardwareConfig(device="cuda", precision="bf16", compile=True),
}

# name -> (builder, input shape, training batch); 10 classes
WORKLOADS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    "mlp 1024 → 4 × 4096 → 10": (lambda: mlp((1024,), 10, hidden=[4096] * 4), (1024,), 4096),
    "cnn1d 128-256-256, (16, 4096) signals": (
        lambda: cnn1d((16, 4096), 10, channels=[128, 256, 256], kernel_size=5),
        (16, 4096),
        256,
    ),
}


class Autocast(nn.Module):
    """Runs the wrapped model under a precision's autocast, so ``measure`` times mixed precision."""

    def __init__(self, model: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.model = model
        self.precision = precision

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.model(inputs)


def training_step(model: nn.Module, hardware: optiforge.HardwareConfig, inputs: torch.Tensor, targets: torch.Tensor):
    """One step of optiforge's training loop for ``model`` (on the GPU); returns ``step() -> loss``."""
    device = inputs.device
    precision = Precision(hardware.precision, device)
    forward_model = compile_model(model, hardware, inputs[:2])
    optimizer = build_optimizer(model, optiforge.OptimizerConfig(name="adamw", lr=1e-4))
    loss_function = task_for("classification").loss
    model.train()

    def step() -> float:
        with precision.autocast():
            outputs = forward_model(inputs)
            loss = loss_function(outputs.float(), targets)
        precision.scaler.scale(loss).backward()
        precision.scaler.step(optimizer)
        precision.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()  # the loop reads the loss every step (NaN check, progress): a CPU-GPU sync point

    return step


def timed_round(step: Callable[[], float], steps: int) -> tuple[float, float]:
    """(seconds per step, last loss) over ``steps`` steps, the GPU drained before and after."""
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps, loss


def bench_training(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    for name, (build, input_shape, batch) in WORKLOADS.items():
        torch.manual_seed(0)
        initial = build()
        inputs = torch.randn(batch, *input_shape, device=device)
        targets = torch.randint(0, 10, (batch,), device=device)
        steps = {}
        for config_name, hardware in CONFIGS.items():
            model = copy.deepcopy(initial).to(device)
            steps[config_name] = training_step(model, hardware, inputs, targets)
            started = time.perf_counter()
            for _ in range(args.warmup):
                steps[config_name]()
            torch.cuda.synchronize()
            print(f"  {name}, {config_name}: warm-up {time.perf_counter() - started:.1f} s", flush=True)
        seconds: dict[str, list[float]] = {config_name: [] for config_name in CONFIGS}
        losses = {}
        for _ in range(args.rounds):
            for config_name, step in steps.items():
                per_step, losses[config_name] = timed_round(step, args.steps)
                seconds[config_name].append(per_step)
        fp32 = statistics.median(seconds["fp32"])
        for config_name in CONFIGS:
            median = statistics.median(seconds[config_name])
            rows.append(
                {
                    "model": name,
                    "config": config_name,
                    "batch": batch,
                    "step_ms": median * 1000,
                    "samples_per_s": batch / median,
                    "speedup": fp32 / median,
                    "loss": losses[config_name],
                }
            )
        del steps
        torch.cuda.empty_cache()
    return rows


def bench_inference(args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows = []
    measure_config = optiforge.MeasureConfig(
        latency_repeats=args.latency_repeats, warmup=10, throughput_batch=args.inference_batch, throughput_repeats=20
    )
    for name, (build, input_shape, _) in WORKLOADS.items():
        torch.manual_seed(0)
        model = build().to(device).eval()
        test = TensorDataset(torch.randn(1024, *input_shape), torch.randint(0, 10, (1024,)))
        data = optiforge.TaskData(test, test, test, input_shape, 10, name="synthetic")
        figures = {}
        for config_name, hardware in CONFIGS.items():
            wrapped = Autocast(model, Precision(hardware.precision, device))
            wrapped = compile_model(wrapped, hardware, data.example_input(2).to(device))
            figures[config_name] = optiforge.measure(wrapped, data, config=measure_config, device=device)
        fp32 = figures["fp32"]
        for config_name, measured in figures.items():
            rows.append(
                {
                    "model": name,
                    "config": config_name,
                    "p50_ms": measured.latency_ms["p50"],
                    "p95_ms": measured.latency_ms["p95"],
                    "latency_speedup": fp32.latency_ms["p50"] / measured.latency_ms["p50"],
                    "samples_per_s": measured.throughput_per_s,
                    "throughput_speedup": measured.throughput_per_s / fp32.throughput_per_s,
                    "peak_mb": (measured.peak_memory_bytes or 0) / 1e6,
                }
            )
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each configuration keeps its median")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per configuration (compilation too)")
    parser.add_argument("--latency-repeats", type=int, default=200)
    parser.add_argument("--inference-batch", type=int, default=4096)
    parser.add_argument("--skip-inference", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit(
            f"benchmarks/gpu.py needs a CUDA device, and torch {torch.__version__} sees none here; "
            "run it on a machine with an NVIDIA GPU"
        )
    device = torch.device("cuda")
    properties = torch.cuda.get_device_properties(device)
    print(
        f"device: {properties.name} ({properties.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    )
    print(f"rounds {args.rounds} × {args.steps} steps after {args.warmup} warm-up steps; AdamW; synthetic batches")

    training = bench_training(args, device)
    print("\n## Training throughput (one optimizer step: forward, backward, AdamW)\n")
    print("| model | batch | precision | step ms | samples/s | vs fp32 | loss at the end |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for row in training:
        print(
            f"| {row['model']} | {row['batch']} | {row['config']} | {row['step_ms']:.2f} | "
            f"{row['samples_per_s']:,.0f} | {row['speedup']:.2f}× | {row['loss']:.3f} |"
        )
    if args.skip_inference:
        return
    inference = bench_inference(args, device)
    print(f"\n## Inference (`optiforge.measure`: latency at batch 1, throughput at batch {args.inference_batch})\n")
    print("| model | precision | p50 ms | p95 ms | latency vs fp32 | samples/s | throughput vs fp32 | peak MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in inference:
        print(
            f"| {row['model']} | {row['config']} | {row['p50_ms']:.3f} | {row['p95_ms']:.3f} | "
            f"{row['latency_speedup']:.2f}× | {row['samples_per_s']:,.0f} | {row['throughput_speedup']:.2f}× | "
            f"{row['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
