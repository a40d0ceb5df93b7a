"""``optiforge quantize-onnx``: quantize an ONNX file with ONNX Runtime (path in, path out)."""

from __future__ import annotations

import argparse

from optiforge.cli import command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="float ONNX file")
    parser.add_argument("destination", help="int8 ONNX file to write")
    parser.add_argument("--scheme", choices=["int8_dynamic", "int8_static"], default="int8_dynamic")
    parser.add_argument("--data", help="int8_static: a built-in dataset whose training split calibrates (e.g. digits)")
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--observer", choices=["minmax", "moving_average", "percentile"], default="minmax")
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per channel")
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="NODE", help="ONNX node name kept float (repeatable)"
    )


@command("quantize-onnx", "quantize an ONNX model to int8 with ONNX Runtime", _arguments)
def quantize_onnx_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from optiforge.errors import ConfigError
    from optiforge.quantization import quantize_onnx

    if not Path(args.source).is_file():
        raise ConfigError(f"quantize-onnx: no file '{args.source}'")
    calibration = None
    if args.scheme == "int8_static":
        if not args.data:
            raise ConfigError("quantize-onnx: --scheme int8_static needs --data NAME to calibrate on")
        from optiforge.config import DataConfig
        from optiforge.data import build_data
        from optiforge.data.loaders import make_loader

        calibration = make_loader(build_data(DataConfig(name=args.data)).train, 64, shuffle=True)
    path = quantize_onnx(
        args.source,
        args.destination,
        scheme=args.scheme,
        calibration=calibration,
        calibration_batches=args.calibration_batches,
        observer=args.observer,
        per_channel=not args.per_tensor,
        nodes_to_exclude=args.exclude,
    )
    before, after = Path(args.source).stat().st_size, path.stat().st_size
    print(f"wrote {path} ({after / 1000:.1f} KB, {before / after:.2f}x smaller than {args.source})")
    return 0
