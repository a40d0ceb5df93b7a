"""Compression benchmarks, peers measured side by side in one run.

1. Deep-Compression ratio: MLP 300-100 on digits, gradual magnitude pruning
   then 16 shared values per layer; packed file against the float32 state dict.
2. Structured speed-up: 1-D CNN 64-128-128 on MNIST-1D, 60% of channels
   removed (Torch-Pruning) with fine-tuning; throughput at batch 256 against
   the unpruned model, timed alternately in the same process.
3. Low-rank: the digits MLP factorised at three ranks; parameters, throughput, accuracy.

    .venv/bin/python benchmarks/compression.py            # all three
    .venv/bin/python benchmarks/compression.py --only structured --quick
"""

from __future__ import annotations

import argparse
import copy
import functools
import io
import tempfile
from pathlib import Path

import torch

import optiforge
from optiforge.bench.timing import interleaved, per_second, timed
from optiforge.compress import FactorizeConfig, PruneConfig, ShareConfig, factorize, prune, share, write_packed


def state_dict_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def accuracy(model: torch.nn.Module, data: optiforge.TaskData) -> float:
    return optiforge.measure(
        model, data, config=optiforge.MeasureConfig(latency_repeats=1, warmup=0, throughput_repeats=1)
    ).value


@torch.inference_mode()
def throughputs(models: dict[str, torch.nn.Module], batch: torch.Tensor, rounds: int = 30) -> dict[str, float]:
    """Samples/s per model: interleaved rounds so background load hits every model alike; median of rounds."""
    for model in models.values():
        model.eval()
    runs = {name: functools.partial(model, batch) for name, model in models.items()}
    times = interleaved(runs, rounds=rounds, repeats=1, warmup=5)
    return {name: per_second(batch.shape[0], values) for name, values in times.items()}


def deep_compression(quick: bool, folder: Path) -> None:
    print("\n## Deep-Compression ratio: MLP 300-100 on digits")
    data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    settings = optiforge.TrainConfig(
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
        schedule={"name": "cosine", "warmup_epochs": 1},
        epochs=5 if quick else 30,
    )
    base = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[300, 100]), data)
    optiforge.train(base, data, settings, progress=False)
    base_accuracy, dense_bytes = accuracy(base, data), state_dict_bytes(base)
    float_bytes = sum(p.numel() for p in base.parameters()) * 4
    print(
        f"float32 model: accuracy {base_accuracy:.4f}, state dict {dense_bytes} bytes "
        f"({float_bytes} bytes of float32 values)"
    )
    print("| sparsity | clusters | accuracy | Δ points | packed bytes | × vs state dict | × vs float32 values |")
    print("|---|---|---|---|---|---|---|")
    finetune = settings.model_copy(update={"schedule": optiforge.ScheduleConfig(name="cosine")})
    for sparsity in (0.92, 0.94):
        model = copy.deepcopy(base)
        prune(
            model,
            PruneConfig(sparsity=sparsity, schedule="gradual", finetune={"epochs": 3 if quick else 20}),
            data,
            train_config=finetune,
        )
        pruned_accuracy = accuracy(model, data)
        pruned_bytes = write_packed(model, folder / f"pruned-{sparsity}.ofpk").stat().st_size
        print(
            f"| {sparsity:.2f} | - | {pruned_accuracy:.4f} | {100 * (pruned_accuracy - base_accuracy):+.1f} "
            f"| {pruned_bytes} | {dense_bytes / pruned_bytes:.1f} | {float_bytes / pruned_bytes:.1f} |"
        )
        share(
            model,
            ShareConfig(clusters=16, include_bias=True, finetune={"epochs": 1 if quick else 5}),
            data,
            train_config=finetune.model_copy(
                update={"optimizer": optiforge.OptimizerConfig(name="sgd", lr=0.005, momentum=0.9)}
            ),
        )
        shared_accuracy = accuracy(model, data)
        packed_bytes = write_packed(model, folder / f"shared-{sparsity}.ofpk").stat().st_size
        print(
            f"| {sparsity:.2f} | 16 | {shared_accuracy:.4f} | {100 * (shared_accuracy - base_accuracy):+.1f} "
            f"| {packed_bytes} | {dense_bytes / packed_bytes:.1f} | {float_bytes / packed_bytes:.1f} |"
        )


def structured(quick: bool, folder: Path) -> None:
    print("\n## Structured speed-up: cnn1d 64-128-128 on MNIST-1D, 60% of channels removed")
    data = optiforge.build_data(optiforge.DataConfig(name="mnist1d"))
    settings = optiforge.TrainConfig(
        optimizer={"name": "adamw", "lr": 0.005, "weight_decay": 0.01},
        schedule={"name": "onecycle"},
        epochs=3 if quick else 30,
    )
    base = optiforge.build_model(optiforge.ModelConfig(name="cnn1d", channels=[64, 128, 128]), data)
    optiforge.train(base, data, settings, progress=False)
    pruned = prune(
        copy.deepcopy(base),
        PruneConfig(
            method="structured",
            sparsity=0.6,
            scope="layer",
            finetune={"epochs": 3 if quick else 15},
            structured={"importance": "l2", "iterative_steps": 3},
        ),
        data,
        train_config=settings.model_copy(
            update={"optimizer": optiforge.OptimizerConfig(name="adamw", lr=0.002, weight_decay=0.01)}
        ),
    )
    one_shot = prune(copy.deepcopy(base), PruneConfig(method="structured", sparsity=0.6, scope="layer"), data)
    batch = data.example_input(256)
    speed = throughputs({"unpruned": base, "pruned": pruned}, batch)
    rows = [("unpruned", base), ("60% channels, fine-tuned", pruned), ("60% channels, no fine-tuning", one_shot)]
    print(f"channels after pruning: {[m.out_channels for m in pruned if isinstance(m, torch.nn.Conv1d)]}")
    print("| model | accuracy | Δ points | params | packed bytes | samples/s at batch 256 | speed-up |")
    print("|---|---|---|---|---|---|---|")
    base_accuracy = accuracy(base, data)
    for name, model in rows:
        value = accuracy(model, data)
        size = write_packed(model, folder / f"{name[:8]}.ofpk").stat().st_size
        rate = speed.get("pruned" if model is pruned else "unpruned" if model is base else "", None)
        shown = f"{rate:,.0f}" if rate else "-"
        ratio = f"{rate / speed['unpruned']:.2f}×" if rate else "-"
        print(
            f"| {name} | {value:.4f} | {100 * (value - base_accuracy):+.1f} | "
            f"{sum(p.numel() for p in model.parameters()):,} | {size} | {shown} | {ratio} |"
        )


def low_rank(quick: bool, folder: Path) -> None:
    print("\n## Low-rank factorisation: MLP 300-100 on digits")
    data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    settings = optiforge.TrainConfig(
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9}, schedule={"name": "cosine"}, epochs=5 if quick else 30
    )
    base = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[300, 100]), data)
    optiforge.train(base, data, settings, progress=False)
    models = {"full rank": base}
    for ratio in (0.5, 0.25, 0.1):
        models[f"rank ratio {ratio}"] = factorize(
            copy.deepcopy(base),
            FactorizeConfig(rank_ratio=ratio, finetune={"epochs": 2 if quick else 5}),
            data,
            train_config=settings.model_copy(
                update={"optimizer": optiforge.OptimizerConfig(name="sgd", lr=0.01, momentum=0.9)}
            ),
        )
    speed = throughputs(models, data.example_input(256))
    base_accuracy = accuracy(base, data)
    print("| model | params | accuracy | Δ points | samples/s at batch 256 | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        value = accuracy(model, data)
        print(
            f"| {name} | {sum(p.numel() for p in model.parameters()):,} | {value:.4f} | "
            f"{100 * (value - base_accuracy):+.1f} | {speed[name]:,.0f} | {speed[name] / speed['full rank']:.2f}× |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["deep", "structured", "lowrank"], action="append")
    parser.add_argument("--quick", action="store_true", help="few epochs: checks the script, not the figures")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    chosen = args.only or ["deep", "structured", "lowrank"]
    with tempfile.TemporaryDirectory() as folder:
        for name, run in (("deep", deep_compression), ("structured", structured), ("lowrank", low_rank)):
            if name in chosen:
                (seconds,) = timed(functools.partial(run, args.quick, Path(folder)), repeats=1)
                print(f"({seconds:.0f} s)")


if __name__ == "__main__":
    main()
