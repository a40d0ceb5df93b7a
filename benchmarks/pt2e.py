"""PT2E int8 through inductor against the ``torch.ao`` int8 path, on the quantize-cnn MNIST-1D CNN, in one run.

The CNN (channels 64-128-128) is trained as the ``quantize-cnn`` recipe trains
it, then quantized to static int8 twice from the same calibration batches:
by ``torch.ao``'s FX graph mode (engine ``torch``, run eagerly, as it ships)
and by PT2E (engine ``pt2e``, ``X86InductorQuantizer``, run compiled by
inductor with frozen weights). Beside them: fp32 eager and fp32 compiled.
Throughput (batch 256) and latency (batch 1) are timed in interleaved
rounds; compile time is reported apart. Accuracy and top-1 agreement with
the float model are on the test split; size is the artefact on disk
(``.pt2`` for PT2E).

    PYTHONPATH=src .venv/bin/python benchmarks/pt2e.py              # full run
    PYTHONPATH=src .venv/bin/python benchmarks/pt2e.py --quick      # 2 epochs, for a smoke run
"""

from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import optiforge
from optiforge.bench.deployment import precision_of
from optiforge.bench.timing import interleaved, per_second
from optiforge.data.loaders import make_loader
from optiforge.files import atomic_save
from optiforge.hardware.capabilities import fast_dtypes
from optiforge.hardware.inference_compile import compile_for_inference
from optiforge.quantization import QuantConfig, quantize_with_result, save_quantized


def train_cnn(epochs: int) -> tuple[torch.nn.Module, optiforge.TaskData]:
    recipe = optiforge.load_recipe("quantize-cnn", [f"train.epochs={epochs}"])
    data = optiforge.build_data(recipe.data)
    torch.manual_seed(recipe.train.seed)
    model = optiforge.build_model(recipe.model, data)
    return optiforge.train(model, data, recipe.train, progress=False).model.eval(), data


@torch.inference_mode()
def accuracy_and_agreement(model, reference, data) -> tuple[float, float]:
    correct = agree = total = 0
    for inputs, targets in make_loader(data.test, 500):
        predicted, expected = model(inputs).argmax(1), reference(inputs).argmax(1)
        correct += int((predicted == targets).sum())
        agree += int((predicted == expected).sum())
        total += len(targets)
    return correct / total, agree / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 training epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("optiforge").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), fast precisions here: {sorted(fast_dtypes('cpu'))}")

    model, data = train_cnn(2 if args.quick else 10)
    calibration = make_loader(data.train, 64, shuffle=True, seed=0)
    folder = Path(tempfile.mkdtemp(prefix="optiforge-pt2e-"))
    config = {"calibration": {"batches": 16}}
    ao = quantize_with_result(model, QuantConfig(scheme="int8_static", engine="torch", **config), calibration)
    pt2e = quantize_with_result(model, QuantConfig(scheme="int8_static", engine="pt2e", **config), calibration)
    batch, single = data.example_input(256), data.example_input(1)

    started = time.perf_counter()
    fp32_compiled = compile_for_inference(model, [batch, single, data.example_input(500)])
    int8_compiled = compile_for_inference(pt2e.model, [batch, single, data.example_input(500)])
    print(f"compile seconds: fp32 {fp32_compiled.compile_seconds}, pt2e int8 {int8_compiled.compile_seconds}")
    print(f"(both, with the first calls: {time.perf_counter() - started:.1f} s)")
    if int8_compiled.fallback:
        print(f"pt2e int8 did not compile: {int8_compiled.fallback}")

    models = {
        "fp32 eager": model,
        "fp32 compiled": fp32_compiled.model,
        "int8 torch.ao (FX, eager)": ao.model,
        "int8 PT2E + inductor": int8_compiled.model,
    }
    sizes = {
        "fp32 eager": atomic_save(model.state_dict(), folder / "fp32.pt").stat().st_size,
        "int8 torch.ao (FX, eager)": save_quantized(ao.model, folder / "ao.pt").stat().st_size,
        "int8 PT2E + inductor": save_quantized(pt2e.model, folder / "pt2e.pt").stat().st_size,
    }
    sizes["fp32 compiled"] = sizes["fp32 eager"]
    with torch.inference_mode():
        throughput_times = interleaved(
            {name: functools.partial(m, batch) for name, m in models.items()}, rounds=args.rounds, repeats=5, warmup=2
        )
        latency_times = interleaved(
            {name: functools.partial(m, single) for name, m in models.items()}, rounds=args.rounds, repeats=20
        )
    base = per_second(256, throughput_times["fp32 eager"])
    print()
    print("| model | precision | accuracy | agreement | size KB | samples/s @256 | × fp32 eager | p50 ms @1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in models.items():
        accuracy, agreement = accuracy_and_agreement(m, model, data)
        speed = per_second(256, throughput_times[name])
        latency_ms = statistics.median(latency_times[name]) * 1000
        print(
            f"| {name} | {precision_of(m)} | {accuracy:.4f} | {agreement:.4f} | {sizes[name] / 1000:.0f} | "
            f"{speed:,.0f} | {speed / base:.2f} | {latency_ms:.3f} |"
        )


if __name__ == "__main__":
    main()
