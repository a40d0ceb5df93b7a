"""``optiforge quantize-onnx``: quantize an ONNX file with ONNX Runtime (path in, path out)."""

from __future__ import annotations

import argparse
from pathlib import Path

from optiforge.cli import command
from optiforge.errors import ConfigError


def check_onnx_file(path: Path) -> None:
    """Refuse a file that ONNX cannot read as a model (empty, truncated, not ONNX), naming the file."""
    try:
        import onnx
    except ImportError:
        return  # the quantizer names the missing package
    if path.stat().st_size == 0:
        raise ConfigError(f"quantize-onnx: '{path}' is empty, not an ONNX model")
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:  # the file is the user's: any parse or check failure means it is not a usable model
        reason = " ".join(str(error).split())[:200]
        raise ConfigError(
            f"quantize-onnx: '{path}' is not a readable ONNX model ({type(error).__name__}: {reason})"
        ) from None


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
    from optiforge.quantization import quantize_onnx

    source, destination = Path(args.source), Path(args.destination)
    if not source.is_file():
        raise ConfigError(f"quantize-onnx: no file '{args.source}'")
    if destination.is_dir():
        raise ConfigError(f"quantize-onnx: '{destination}' is a folder; give the file to write")
    if source.resolve() == destination.resolve() or (destination.exists() and destination.samefile(source)):
        raise ConfigError(f"quantize-onnx: the destination '{destination}' is the source file; choose another")
    check_onnx_file(source)
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
