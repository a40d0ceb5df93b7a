"""Search benchmarks: what ``optiforge optimize`` finds with its default space, and what the search costs.

1. Digits MLP 300-100, objective size, --max-drop 0.01: compression of the shipped artefact (its packed
   file) against the float32 state dict (goal >= 50x), beside the hand-written ``compress`` recipe (43x).
2. MNIST-1D CNN 64-128-128, --max-drop 0.01: latency at batch 1 (goal >= 5x lower than float32) and
   throughput at batch 256 (goal >= 8x), both against the float model timed interleaved, beside the
   hand-written ``quantize-cnn`` recipe applied to the same trained model.
3. The search's own cost as the space grows (1, 2, 4, ... candidates): wall time with prefix sharing and
   successive halving, with sharing only, and with neither (each candidate searched on its own), plotted.

Run on an idle machine; each part writes its run folders under --out and prints a Markdown table.
Expected duration on an idle 2-core CPU: about 25 minutes in all (size 5, speed 16 with the training,
cost 4); the searches stop at --budget minutes each (default 6) between candidates, so a loaded machine
measures fewer candidates rather than running longer (successive halving measures every proxy before any
candidate in full, so a budget spent on proxies ships the float model: read the notes it prints).
``--quick`` (a few training epochs, 2-minute budgets, two space sizes) checks the script end to end;
its figures mean nothing.

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

QUICK_EPOCHS = ["--set", "train.epochs=3"]
HEADER = [
    "| task | objective | shipped | metric | ratio | seconds | budget min |",
    "| --- | --- | --- | --- | --- | --- | --- |",
]


def cli(*arguments: str) -> float:
    """Run ``optiforge ARGUMENTS`` in its own process; return its wall time."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "optiforge.cli", *arguments], check=True)
    return time.perf_counter() - started


def run_recipe(recipe: str, out: Path, *extra: str) -> dict:
    """Run a hand-written recipe; return its report and wall time."""
    seconds = cli("run", recipe, "--out", str(out), "--no-progress", *extra)
    return {"report": json.loads((out / "report.json").read_text()), "seconds": seconds}


def optimize(source: str, objective: str, out: Path, budget: str, *extra: str) -> dict:
    """Run ``optiforge optimize``; return the baseline and search rows, ``search.json`` and the wall time."""
    arguments = ["optimize", source, "--objective", objective, "--max-drop", "0.01", "--budget", budget]
    seconds = cli(*arguments, "--out", str(out), "--no-progress", *extra)
    report = json.loads((out / "report.json").read_text())
    search = json.loads((out / "search" / "search.json").read_text())
    return {"baseline": report["stages"][0], "row": report["stages"][-1], "search": search, "seconds": seconds}


def _chosen(search: dict) -> dict | None:
    return next((row for row in search["candidates"] if row.get("chosen")), None)


def _hand_stages(report: dict) -> str:
    return " + ".join(row["stage"] for row in report["stages"][1:]) or "none"


def size_benchmark(out: Path, budget: str, quick: bool) -> str:
    extra = QUICK_EPOCHS if quick else []
    hand = run_recipe("compress", out / "digits-compress-recipe", *extra)
    first, last = hand["report"]["stages"][0], hand["report"]["stages"][-1]
    result = optimize("compress", "size", out / "digits-size", budget, *extra)
    ratio = result["baseline"]["size_bytes"] / result["row"]["size_bytes"]
    return "\n".join(
        [
            *HEADER,
            f"| digits MLP 300-100 | size (search) | {result['search']['chosen']} | {result['row']['value']:.4f} "
            f"| {ratio:.1f}x smaller | {result['seconds']:.0f} | {budget} |",
            f"| digits MLP 300-100 | size (compress.yaml) | {_hand_stages(hand['report'])} | {last['value']:.4f} "
            f"| {first['size_bytes'] / last['size_bytes']:.1f}x smaller | {hand['seconds']:.0f} | - |",
            f"\nfloat32 state dict: {result['baseline']['size_bytes']:,} bytes, accuracy "
            f"{result['baseline']['value']:.4f}; shipped {result['row']['size_bytes']:,} bytes.",
        ]
    )


def _speed_ratio(first: dict, last: dict, objective: str) -> float:
    if objective == "latency":
        return first["latency_ms"]["p50"] / last["latency_ms"]["p50"]
    return last["throughput_per_s"] / first["throughput_per_s"]


def speed_benchmark(out: Path, budget: str, quick: bool) -> str:
    extra = QUICK_EPOCHS if quick else []
    trained = out / "mnist1d-trained"
    train_seconds = run_recipe("mnist1d", trained, *extra)["seconds"]
    checkpoint = ["--set", f"model.checkpoint={(trained / 'train' / 'model.pt').resolve()}", "--set", "train.epochs=0"]
    hand = run_recipe("quantize-cnn", out / "mnist1d-quantize-cnn-recipe", *checkpoint)
    first, last = hand["report"]["stages"][0], hand["report"]["stages"][-1]
    rows = list(HEADER)
    for objective, batch in (("latency", "1"), ("throughput", "256")):
        result = optimize(str(trained), objective, out / f"mnist1d-{objective}", budget, "--batch", batch)
        chosen = _chosen(result["search"])
        speedup = chosen["speedup"] if chosen else 1.0
        rows.append(
            f"| MNIST-1D CNN | {objective} at batch {batch} (search) | {result['search']['chosen']} "
            f"| {result['row']['value']:.4f} | {speedup:.2f}x | {result['seconds']:.0f} | {budget} |"
        )
        rows.append(
            f"| MNIST-1D CNN | {objective} (quantize-cnn.yaml, one thread) | {_hand_stages(hand['report'])} "
            f"| {last['value']:.4f} | {_speed_ratio(first, last, objective):.2f}x | {hand['seconds']:.0f} | - |"
        )
    rows.append(f"\nfloat32 CNN trained once ({train_seconds:.0f} s); both searches start from it.")
    return "\n".join(rows)


def cost_benchmark(out: Path, quick: bool) -> str:
    data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[300, 100]), data)
    model = optiforge.train(model, data, optiforge.TrainConfig(epochs=5), progress=False).model
    sparsities = [0.2, 0.4, 0.6, 0.8][: 2 if quick else 4]
    # engine torch by name: auto would measure every engine for each candidate (and refuse emulated bf16)
    schemes = ["none", *({"scheme": scheme, "engine": "torch"} for scheme in ("bf16", "int8_dynamic", "int8_static"))]
    series: dict[str, tuple[list[float], list[float]]] = {"sharing + halving": ([], []), "sharing": ([], [])}
    series["neither"] = ([], [])
    rows = ["| candidates | sharing + halving s | sharing s | neither s |", "| --- | --- | --- | --- |"]
    for count in range(1, len(sparsities) + 1):
        options = {"prune.sparsity": sparsities[:count], "quantize": schemes}
        base = {"stages": [{"prune": {"method": "structured", "finetune": {"epochs": 4}}}], "options": options}
        timings = {}
        for label, extra in (("sharing + halving", {"effort": {"proxy": {"fraction": 0.25}}}), ("sharing", {})):
            started = time.perf_counter()
            optiforge.optimize(model, data, search={**base, **extra}, out=out / f"cost-{count}-{label}", progress=False)
            timings[label] = time.perf_counter() - started
        started = time.perf_counter()
        for sparsity in sparsities[:count]:
            for scheme in schemes:
                single = {**base, "options": {"prune.sparsity": [sparsity], "quantize": [scheme]}}
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
    parser.add_argument("--budget", help="budget of each optimize run, minutes (default 6; 2 with --quick)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    budget = args.budget or ("2" if args.quick else "6")
    parts = {
        "size": lambda: size_benchmark(out, budget, args.quick),
        "speed": lambda: speed_benchmark(out, budget, args.quick),
        "cost": lambda: cost_benchmark(out, args.quick),
    }
    started = time.perf_counter()
    for name, part in parts.items():
        if args.only in (None, name):
            print(f"\n## {name}\n\n{part()}", flush=True)
    print(f"\nbenchmark wall time: {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
