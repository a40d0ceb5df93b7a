"""EfficientNet-Lite0 on CPU: float32, the usual int8 engines and optiforge's result, in one run.

Every engine classifies the same evaluation views of packaged photographs
(``data: {name: photos}``, photographs no calibration view comes from).
Fidelity is measured against float32 PyTorch eager: top-1 agreement and the
mean cosine between logit vectors. Speed is timed at batch 1 and batch 32 in
interleaved rounds (:func:`optiforge.bench.timing.interleaved`): within a
round every engine runs in turn, so load from other processes on a shared
CPU falls on all engines alike. Building time (export, calibration,
compilation: the first call of a compiled model) is reported apart.

    .venv/bin/python benchmarks/efficientnet.py                          # runs the efficientnet recipe first
    .venv/bin/python benchmarks/efficientnet.py --run runs/efficientnet  # reuses a finished run's export
    .venv/bin/python benchmarks/efficientnet.py --quick                  # a short check that every engine runs
    .venv/bin/python benchmarks/efficientnet.py --run R --optimized O    # and what 'optiforge optimize' shipped

Engines are the entries of :data:`ENGINES` (name → builder); an engine that
cannot run here (a missing package, no bf16 units) gives its row a reason
instead of figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import optiforge
from optiforge.bench.timing import interleaved, latency_ms, per_second
from optiforge.data.photos import photos
from optiforge.exporters.onnx import OnnxModule, export_onnx
from optiforge.hardware.capabilities import cpu_has_bf16
from optiforge.models.efficientnet import load_efficientnet_lite0

BATCH_SIZES = (1, 32)


class Unavailable(Exception):
    """The engine cannot run on this machine; the message says why."""


@dataclass
class Bench:
    model: nn.Module  # float32 eager, the reference
    calibration: torch.Tensor  # (count, 3, 224, 224) views of calibration photographs
    folder: Path
    threads: int
    run_dir: Path | None
    optimized: Path | None = None  # a finished 'optiforge optimize efficientnet' folder


def fp32_eager(bench: Bench) -> nn.Module:
    return bench.model


def fp32_compiled(bench: Bench) -> Callable:
    import torch._inductor.config as inductor

    inductor.freezing = True  # weights become constants inductor can fold and pre-pack
    return torch.compile(copy.deepcopy(bench.model))


class Bf16(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(torch.bfloat16)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values.to(torch.bfloat16)).float()


def bf16_cast(bench: Bench) -> nn.Module:
    # without bf16 units (AVX-512 BF16 or AMX) PyTorch emulates bf16, far slower than float32
    if not cpu_has_bf16():
        raise Unavailable("this CPU has no bf16 units (avx512_bf16 / amx_bf16)")
    return Bf16(bench.model)


def torch_ao_int8(bench: Bench) -> nn.Module:
    """optiforge's PyTorch int8 engine today: ``torch.ao`` FX graph mode, x86 backend, static."""
    from optiforge.quantization import QuantConfig, quantize_with_result

    config = QuantConfig(scheme="int8_static", engine="torch", calibration={"batches": 4})
    batches = list(bench.calibration.split(32))
    return quantize_with_result(bench.model, config, calibration=batches).model


def pt2e_int8(bench: Bench) -> nn.Module:
    """optiforge's ``pt2e`` engine: torchao's PT2E with ``X86InductorQuantizer``, static, compiled by inductor."""
    from optiforge.quantization import QuantConfig, quantize_with_result

    config = QuantConfig(scheme="int8_static", engine="pt2e", calibration={"batches": 4})
    return quantize_with_result(bench.model, config, calibration=list(bench.calibration.split(32))).model


def onnxruntime_static_int8(bench: Bench) -> nn.Module:
    """ONNX Runtime's ``quantize_static`` as its documentation shows it: QDQ, per-channel weights."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    float_path = export_onnx(bench.model, bench.folder / "float.onnx", bench.calibration[:1])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"pixel_values": batch.numpy()} for batch in bench.calibration.split(32)])

        def get_next(self):
            return next(self.batches, None)

    int8_path = bench.folder / "ort-static-int8.onnx"
    quantize_static(str(float_path), str(int8_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    return OnnxModule(int8_path, bench.threads)


def openvino_nncf_int8(bench: Bench) -> nn.Module:
    """OpenVINO int8 as NNCF's documentation shows it: ``nncf.quantize`` with its defaults, every layer int8."""
    import nncf

    from optiforge.exporters.openvino import OpenVinoModule, convert, save_ir

    converted = convert(bench.model, bench.calibration[:1])
    dataset = nncf.Dataset(list(bench.calibration.split(32)), lambda batch: batch.numpy())
    path = save_ir(nncf.quantize(converted, dataset), bench.folder / "openvino-nncf-int8.xml")
    return OpenVinoModule(path, threads=bench.threads)


def openvino_float(precision: str) -> Callable[[Bench], nn.Module]:
    """The float model converted to OpenVINO, run in ``precision`` (bf16 only on a CPU with bf16 units)."""

    def build(bench: Bench) -> nn.Module:
        from optiforge.exporters.openvino import OpenVinoModule, bf16_supported, convert, save_ir

        if precision == "bf16" and not bf16_supported():
            raise Unavailable("OpenVINO finds no bf16 units on this CPU (AVX-512 BF16 or AMX)")
        path = save_ir(convert(bench.model, bench.calibration[:1]), bench.folder / "openvino-float.xml")
        return OpenVinoModule(path, precision, threads=bench.threads)

    return build


def optiforge_optimize(bench: Bench) -> nn.Module:
    """What ``optiforge optimize efficientnet`` shipped (``--optimized RUN``): its search row's artefact."""
    from optiforge.exporters.openvino import OpenVinoModule

    if bench.optimized is None:
        raise Unavailable("no --optimized run folder given")
    row = json.loads((bench.optimized / "report.json").read_text())["stages"][-1]
    path = bench.optimized / (row.get("artifact") or "")
    if path.suffix == ".xml":  # OpenVINO's bf16 candidate ships a float IR run with the bf16 hint
        precision = "bf16" if "scheme=bf16" in (row.get("chosen") or "") else "f32"
        return OpenVinoModule(path, precision, threads=bench.threads)
    if path.suffix == ".onnx":
        return OnnxModule(path, bench.threads)
    raise Unavailable(f"the optimize run shipped {row.get('chosen')!r} as {path.name}, not an IR or ONNX file")


def optiforge_recipe(bench: Bench) -> nn.Module:
    """The graph the ``efficientnet`` recipe exports: its OpenVINO IR (else its ONNX file, in ONNX Runtime)."""
    from optiforge.exporters.openvino import OpenVinoModule

    report = json.loads((bench.run_dir / "report.json").read_text())
    exports = {item["format"]: bench.run_dir / item["artifact"] for item in report["exports"]}
    if "openvino" in exports:
        return OpenVinoModule(exports["openvino"], threads=bench.threads)
    return OnnxModule(exports["onnx"], bench.threads)


# name → builder(bench) -> a callable taking pixel_values and giving logits; more engines slot in here
ENGINES: dict[str, Callable[[Bench], Callable]] = {
    "PyTorch fp32 eager": fp32_eager,
    "PyTorch fp32 torch.compile": fp32_compiled,
    "PyTorch bf16 (cast)": bf16_cast,
    "PyTorch int8 static (torch.ao FX)": torch_ao_int8,
    "PyTorch int8 static (PT2E + inductor)": pt2e_int8,
    "ONNX Runtime int8 static (QDQ)": onnxruntime_static_int8,
    "OpenVINO f32": openvino_float("f32"),
    "OpenVINO bf16": openvino_float("bf16"),
    "OpenVINO int8 (NNCF defaults)": openvino_nncf_int8,
    "optiforge efficientnet recipe": optiforge_recipe,
    "optiforge optimize (its shipped artefact)": optiforge_optimize,
}
REFERENCE = "PyTorch fp32 eager"


@torch.inference_mode()
def logits_of(model: Callable, views: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.as_tensor(model(batch)).float() for batch in views.split(32)])


def fidelity(logits: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    return {
        "agreement": float((logits.argmax(1) == reference.argmax(1)).float().mean()),
        "cosine": float(F.cosine_similarity(logits, reference, dim=1).mean()),
    }


def run_recipe(quick: bool, folder: Path) -> Path:
    quick_overrides = ["data.views=48", "measure.latency_repeats=2", "measure.throughput_repeats=1"]
    # a few views judge the cosine floor on a few validation views: a miss would search layer by layer
    quick_overrides += ["stages.0.quantize.target.min_fidelity=0.9"]
    overrides = quick_overrides if quick else []
    result = optiforge.run_recipe("efficientnet", overrides, out=folder / "run", progress=False, show_table=False)
    return result.run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished 'optiforge run efficientnet' folder to measure")
    parser.add_argument("--views", type=int, default=1000, help="views of the photos dataset (all splits)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--optimized", type=Path, help="a finished 'optiforge optimize efficientnet' folder")
    parser.add_argument("--engines", nargs="*", help="measure only these engines (names as in the table)")
    parser.add_argument("--quick", action="store_true", help="few views, one round: checks that every engine runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("efficientnet-results"))
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # torch.ao and the exporters warn on every call
    torch.set_num_threads(arguments.threads)
    views, rounds, repeats = (48, 1, 2) if arguments.quick else (arguments.views, arguments.rounds, 5)
    folder = Path(tempfile.mkdtemp(prefix="efficientnet-bench-"))

    data = photos(views=views, seed=0)
    calibration, evaluation = data.train.tensors[0], data.test.tensors[0]
    reference = data.test.tensors[1]
    engines = {name: ENGINES[name] for name in (arguments.engines or ENGINES)}
    run_dir = arguments.run
    if run_dir is None and "optiforge efficientnet recipe" in engines:
        run_dir = run_recipe(arguments.quick, folder)
    bench = Bench(load_efficientnet_lite0(), calibration, folder, arguments.threads, run_dir, arguments.optimized)

    rows, models = [], {}
    for name, build in engines.items():
        row: dict = {"engine": name}
        rows.append(row)
        start = time.perf_counter()
        try:
            model = build(bench)
            with torch.inference_mode():
                model(evaluation[:1])  # a compiled model compiles here
        except Unavailable as reason:
            row["skipped"] = str(reason)
            continue
        row["build_s"] = time.perf_counter() - start
        row.update(fidelity(logits_of(model, evaluation), reference))
        models[name] = model
    for batch_size in BATCH_SIZES:
        batch = evaluation[:batch_size].repeat(-(-batch_size // len(evaluation)), 1, 1, 1)[:batch_size]
        runs = {name: (lambda model=model, batch=batch: model(batch)) for name, model in models.items()}
        with torch.inference_mode():
            times = interleaved(runs, rounds=rounds, repeats=repeats, warmup=1)
        for row in rows:
            if row["engine"] in times:
                seconds = times[row["engine"]]
                row[f"images_per_s_batch{batch_size}"] = per_second(batch_size, seconds)
                row[f"ms_batch{batch_size}"] = latency_ms(seconds)["p50"]

    print(
        f"EfficientNet-Lite0, {len(evaluation)} evaluation views, {arguments.threads} threads, "
        f"{rounds} rounds x {repeats} calls; reference: {REFERENCE}"
    )
    print("| engine | images/s (batch 32) | ms (batch 1) | top-1 agreement | logit cosine | build (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['engine']} | skipped: {row['skipped']} | | | | |")
            continue
        print(
            f"| {row['engine']} | {row['images_per_s_batch32']:.1f} | {row['ms_batch1']:.1f} | "
            f"{100 * row['agreement']:.1f}% | {row['cosine']:.4f} | {row['build_s']:.1f} |"
        )
    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
