"""Search benchmarks: what ``optiforge optimize`` finds with its default space, and what the search costs.

1. Digits MLP 300-100, objective size, --max-drop 0.01: compression of the shipped artefact against the
   float32 state dict (goal >= 50x; the hand-written compress recipe reaches 43x).
2. MNIST-1D CNN 64-128-128, --max-drop 0.01: latency at batch 1 (goal >= 5x lower than float32) and
   throughput at batch 256 (goal >= 8x), both against the float model timed interleaved.
3. The search's own cost as the space grows (1, 2, 4, ... candidates): wall time with prefix sharing and
   successive halving, with sharing only, and with neither (each candidate searched on its own), plotted.

Run on an idle machine; each part writes its run folders under --out and prints a Markdown table.

    .venv/bin/python benchmarks/search.py                 # all three
    .venv/bin/python benchmarks/search.py --only cost --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import optiforge
from optiforge.bench.plots import plot_series


def optimize(recipe: str, objective: str, out: Path, *extra: str) -> dict:
    """Run ``optiforge optimize`` in its own process; return the search row and the wall time."""
    started = time.perf_counter()
    command = [sys.executable, "-m", "optiforge.cli", "optimize", recipe, "--objective", objective]
    subprocess.run([*command, "--max-drop", "0.01", "--out", str(out), "--no-progress", *extra], check=True)
    report = json.loads((out / "report.json").read_text())
    baseline, searched = report["stages"][0], report["stages"][-1]
    return {"baseline": baseline, "search": searched, "seconds": time.perf_counter() - started}


def size_benchmark(out: Path, budget: str) -> str:
    result = optimize("compress", "size", out / "digits-size", "--budget", budget)
    ratio = result["baseline"]["size_bytes"] / result["search"]["size_bytes"]
    return (
        "| task | objective | shipped | metric | ratio | search s |\n| --- | --- | --- | --- | --- | --- |\n"
        f"| digits MLP 300-100 | size | {result['search']['chosen']} | {result['search']['value']:.4f} "
        f"| {ratio:.1f}x smaller | {result['seconds']:.0f} |"
    )


def speed_benchmark(out: Path, budget: str) -> str:
    rows = ["| task | objective | shipped | metric | speed-up | search s |", "| --- | --- | --- | --- | --- | --- |"]
    for objective, batch in (("latency", "1"), ("throughput", "256")):
        result = optimize("mnist1d", objective, out / f"mnist1d-{objective}", "--batch", batch, "--budget", budget)
        search = json.loads((out / f"mnist1d-{objective}" / "search" / "search.json").read_text())
        chosen = next((row for row in search["candidates"] if row.get("chosen")), None)
        speedup = chosen["speedup"] if chosen else 1.0
        rows.append(
            f"| MNIST-1D CNN | {objective} at batch {batch} | {search['chosen']} | {result['search']['value']:.4f} "
            f"| {speedup:.2f}x | {result['seconds']:.0f} |"
        )
    return "\n".join(rows)


def cost_benchmark(out: Path, quick: bool) -> str:
    data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[300, 100]), data)
    model = optiforge.train(model, data, optiforge.TrainConfig(epochs=5), progress=False).model
    sparsities = [0.2, 0.4, 0.6, 0.8][: 2 if quick else 4]
    schemes = ["none", "bf16", "int8_dynamic", "int8_static"]
    series: dict[str, tuple[list[float], list[float]]] = {"sharing + halving": ([], []), "sharing": ([], [])}
    series["neither"] = ([], [])
    rows = ["| candidates | sharing + halving s | sharing s | neither s |", "| --- | --- | --- | --- |"]
    for count in range(1, len(sparsities) + 1):
        options = {"prune.sparsity": sparsities[:count], "quantize.scheme": schemes}
        base = {"stages": [{"prune": {"method": "structured", "finetune_epochs": 4}}], "options": options}
        timings = {}
        for label, extra in (("sharing + halving", {"effort": {"proxy": {"fraction": 0.25}}}), ("sharing", {})):
            started = time.perf_counter()
            optiforge.optimize(model, data, search={**base, **extra}, out=out / f"cost-{count}-{label}", progress=False)
            timings[label] = time.perf_counter() - started
        started = time.perf_counter()
        for sparsity in sparsities[:count]:
            for scheme in schemes:
                single = {**base, "options": {"prune.sparsity": [sparsity], "quantize.scheme": [scheme]}}
                optiforge.optimize(model, data, search=single, out=out / f"cost-{count}-single", progress=False)
        timings["neither"] = time.perf_counter() - started
        candidates = count * len(schemes)
        for label, seconds in timings.items():
            series[label][0].append(candidates)
            series[label][1].append(seconds)
        rows.append(
            f"| {candidates} | {timings['sharing + halving']:.0f} | {timings['sharing']:.0f} "
            f"| {timings['neither']:.0f} |"
        )
    plot_series(series, out / "search_cost.png", "candidates", "wall time (s)", "search cost (digits MLP 300-100)")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["size", "speed", "cost"])
    parser.add_argument("--out", default="runs/bench-search")
    parser.add_argument("--budget", default="60", help="budget of each optimize run, minutes")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    parts = {
        "size": lambda: size_benchmark(out, args.budget),
        "speed": lambda: speed_benchmark(out, args.budget),
        "cost": lambda: cost_benchmark(out, args.quick),
    }
    for name, part in parts.items():
        if args.only in (None, name):
            print(f"\n## {name}\n\n{part()}")


if __name__ == "__main__":
    main()
