"""``optiforge bench MODEL.onnx --provider NAME``: latency of an exported model on an ONNX Runtime provider.

An OpenVINO IR file (``MODEL.xml`` beside its ``.bin``) runs on OpenVINO's CPU plugin
instead, at ``--precision`` (f32, or bf16 where the CPU has bf16 units).
"""

from __future__ import annotations

import argparse
import json

from optiforge.cli import command


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="an .onnx file (e.g. runs/<name>/export/model.onnx) or an OpenVINO IR .xml beside its .bin"
    )
    parser.add_argument(
        "--precision",
        choices=("f32", "bf16"),
        default="f32",
        help="OpenVINO IR only: the inference precision hint (default f32)",
    )
    parser.add_argument(
        "--provider",
        action="append",
        default=None,
        metavar="NAME",
        help="execution provider, full name or short (cpu, cuda, tensorrt, openvino, coreml, "
        "directml, qnn); repeat to compare several (default: cpu)",
    )
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument(
        "--free-dimension",
        type=int,
        default=16,
        help="size for other dynamic dimensions, e.g. sequence length (default 16)",
    )
    parser.add_argument("--repeats", type=int, default=50, help="timed calls (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: ONNX Runtime's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--list", action="store_true", help="list the installed providers and exit")


@command("bench", "run an exported ONNX model on ONNX Runtime execution providers and report latency", _bench_arguments)
def bench_command(args: argparse.Namespace) -> int:
    from optiforge.errors import ConfigError
    from optiforge.hardware.onnx_runtime import bench_onnx, installed_providers

    if args.list:
        print("\n".join(installed_providers()))
        return 0
    checked = (("--batch", args.batch), ("--repeats", args.repeats), ("--free-dimension", args.free_dimension))
    for name, value in checked:
        if value < 1:
            raise ConfigError(f"{name}: {value}; give 1 or more")
    if args.model.endswith(".xml"):
        from optiforge.hardware.openvino_runtime import bench_openvino

        if args.provider not in (None, ["cpu"]):
            raise ConfigError(f"--provider: an OpenVINO IR runs on OpenVINO's CPU plugin, not {args.provider}")
        results = [
            bench_openvino(
                args.model,
                args.precision,
                batch=args.batch,
                free_dimension=args.free_dimension,
                repeats=args.repeats,
                warmup=max(args.warmup, 0),
                threads=args.threads,
            )
        ]
    else:
        results = [
            bench_onnx(
                args.model,
                provider,
                batch=args.batch,
                free_dimension=args.free_dimension,
                repeats=args.repeats,
                warmup=max(args.warmup, 0),
                threads=args.threads,
            )
            for provider in (args.provider or ["cpu"])
        ]
    if args.json:
        print(json.dumps([result.as_dict() for result in results], indent=2))
        return 0
    print(f"{args.model}  batch {args.batch}, {args.repeats} runs")
    print(f"{'provider':<28}{'p50 ms':>10}{'p95 ms':>10}{'samples/s':>14}")
    for result in results:
        print(f"{result.provider:<28}{result.p50_ms:>10.3f}{result.p95_ms:>10.3f}{result.throughput_per_s:>14,.0f}")
    return 0
