"""Quantization schemes and engines side by side, measured in one run.

Part 1: the MNIST-1D CNN (channels 64-128-128): every scheme × engine that
runs on this CPU, with accuracy, artefact size and throughput at batch 256,
as ratios to the float32 model. Part 2: the same table for the digits MLP.

    .venv/bin/python benchmarks/quantization.py            # both parts
    .venv/bin/python benchmarks/quantization.py --quick    # fewer epochs, for a smoke run

Throughput is timed in rounds that visit every model in turn, keeping each
model's best round, so a burst of load from other processes on a shared CPU
does not land on one model only. Both runtimes use ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
import time
import warnings
from pathlib import Path

import torch

import optiforge
from optiforge.bench.timing import interleaved, per_second
from optiforge.data.loaders import make_loader
from optiforge.exporters.onnx import OnnxModule, export_onnx
from optiforge.files import atomic_save
from optiforge.quantization import QuantConfig, quantize_with_result, save_quantized
from optiforge.training.finetune import finetuner

CNN_RUNS = [
    ("int8_dynamic", "torch"),
    ("int8_dynamic", "torchao"),
    ("int8_dynamic", "onnxruntime"),
    ("int8_static", "torch"),
    ("int8_static", "onnxruntime"),
    ("int8_weight_only", "torchao"),
    ("int4_weight_only", "torchao"),
    ("fp16", "torch"),
    ("bf16", "torch"),
    ("qat_int8", "torch"),
]


def artefact(model: torch.nn.Module, folder: Path, name: str) -> Path:
    if isinstance(model, OnnxModule):
        return model.path
    return save_quantized(model, folder / f"{name}.pt")


def best_throughput(models: dict[str, torch.nn.Module], batch: torch.Tensor, rounds: int) -> dict[str, float]:
    """Samples per second of each model (median call), timed in interleaved rounds."""
    runs = {name: functools.partial(model, batch) for name, model in models.items()}
    with torch.inference_mode():
        times = interleaved(runs, rounds=rounds, repeats=5, warmup=2)
    return {name: per_second(batch.shape[0], seconds) for name, seconds in times.items()}


def run(
    dataset: dict,
    model_config: dict,
    train: optiforge.TrainConfig,
    runs: list,
    qat_epochs: int,
    rounds: int,
    title: str,
) -> None:
    data = optiforge.build_data(optiforge.DataConfig(**dataset))
    torch.manual_seed(0)
    model = optiforge.build_model(optiforge.ModelConfig(**model_config), data)
    started = time.perf_counter()
    model = optiforge.train(model, data, train, progress=False).model.cpu().eval()
    print(
        f"\n## {title}\n\nfloat32 trained in {time.perf_counter() - started:.0f} s "
        f"({train.epochs} epochs); torch threads: {torch.get_num_threads()}"
    )
    folder = Path(tempfile.mkdtemp(prefix="optiforge-bench-q-"))
    calibration = make_loader(data.train, 64, shuffle=True, seed=0)
    validation = make_loader(data.val, 256)

    finetune = finetuner(data, train)

    models = {"float32": model}
    files = {"float32": atomic_save(model.state_dict(), folder / "float32.pt")}
    models["float32 onnx"] = OnnxModule(export_onnx(model, folder / "float32.onnx", data.example_input(1)))
    files["float32 onnx"] = models["float32 onnx"].path
    engines = {}
    for scheme, engine in runs:
        name = f"{scheme} {engine}"
        config = QuantConfig(
            scheme=scheme,
            engine=engine,
            finetune={"epochs": qat_epochs},
            calibration={"observer": "percentile" if scheme == "int8_static" else "minmax"},
        )
        result = quantize_with_result(
            model,
            config,
            calibration=calibration,
            validation=validation,
            finetune=finetune,
            output_dir=folder / name.replace(" ", "-"),
        )
        models[name], files[name] = result.model, artefact(result.model, folder, name.replace(" ", "-"))
        engines[name] = result.summary()
    auto = quantize_with_result(
        model,
        QuantConfig(
            scheme="int8_static",
            engine="auto",
            calibration={"observer": "percentile"},
            target={"max_metric_drop": 0.005},
        ),
        calibration=calibration,
        validation=validation,
        output_dir=folder / "auto",
    )

    batch = data.example_input(256)
    speed = best_throughput(models, batch, rounds)
    base = optiforge.measure(model, data, config=optiforge.MeasureConfig(latency_repeats=3, throughput_repeats=1))
    base_size = files["float32"].stat().st_size
    print("\n| model | accuracy | Δ points | agreement | size | smaller | samples/s (batch 256) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for name, candidate in models.items():
        figures = optiforge.measure(
            candidate, data, config=optiforge.MeasureConfig(latency_repeats=3, throughput_repeats=1)
        )
        size = files[name].stat().st_size
        agreement = engines.get(name, {}).get("fidelity", {}).get("agreement")
        print(
            f"| {name} | {figures.value:.4f} | {(figures.value - base.value) * 100:+.2f} | "
            f"{'' if agreement is None else f'{agreement:.3f}'} | {size / 1000:.1f} KB | {base_size / size:.2f}× | "
            f"{speed[name]:,.0f} | {speed[name] / speed['float32']:.2f}× |"
        )
    print(
        f"\nengine: auto (int8_static, max_metric_drop 0.005) chose **{auto.engine or 'the float model'}**: "
        f"{auto.reason}"
    )
    for name, info in engines.items():
        if info["unsupported_layers"]:
            print(f"- {name}: left float (engine cannot quantize them): {', '.join(info['unsupported_layers'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few epochs (a smoke run, not the published figures)")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds over all models")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="PyTorch and ONNX Runtime threads (default 1: on a shared CPU an OpenMP pool of 2 "
        "stalls whenever another process holds a core)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    logging.getLogger("optiforge").setLevel(logging.ERROR)
    torch.manual_seed(0)
    cnn_epochs, mlp_epochs = (2, 2) if args.quick else (20, 30)
    run(
        {"name": "mnist1d"},
        {"name": "cnn1d", "channels": [64, 128, 128], "kernel_size": 5},
        optiforge.TrainConfig(
            optimizer={"name": "adamw", "lr": 0.005, "weight_decay": 0.01},
            schedule={"name": "onecycle"},
            epochs=cnn_epochs,
            batch_size=64,
        ),
        CNN_RUNS,
        qat_epochs=1 if args.quick else 3,
        rounds=args.rounds,
        title="MNIST-1D CNN (64-128-128)",
    )
    run(
        {"name": "digits"},
        {"name": "mlp", "hidden": [256, 128]},
        optiforge.TrainConfig(
            optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
            schedule={"name": "cosine", "warmup_epochs": 1},
            epochs=mlp_epochs,
            batch_size=64,
        ),
        CNN_RUNS,
        qat_epochs=1 if args.quick else 3,
        rounds=args.rounds,
        title="digits MLP (256-128)",
    )


if __name__ == "__main__":
    main()
