"""Latency of an OpenVINO IR file (``.xml`` + ``.bin``) on this machine's CPU, as ``optiforge bench`` reports it."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from optiforge.bench import timing
from optiforge.errors import ConfigError
from optiforge.hardware.onnx_runtime import ProviderLatency, made_up_input
from optiforge.imports import optional_import

PRECISIONS = ("f32", "bf16")


def synthetic_inputs(model, batch: int, free_dimension: int) -> dict[str, np.ndarray]:
    """Inputs matching the graph (an ``openvino.Model``): random floats, ones for integer inputs (ids, masks)."""
    generator = np.random.default_rng(0)
    feeds = {}
    for port in model.inputs:
        name = port.get_node().get_friendly_name()
        shape = [
            batch if axis == 0 else free_dimension if dimension.is_dynamic else dimension.get_length()
            for axis, dimension in enumerate(port.get_partial_shape())
        ]
        dtype = port.get_element_type().to_dtype()
        feeds[name] = made_up_input(shape, dtype, generator)
    return feeds


def bench_openvino(
    path: str | Path,
    precision: str = "f32",
    *,
    batch: int = 1,
    free_dimension: int = 16,
    repeats: int = 50,
    warmup: int = 5,
    threads: int | None = None,
) -> ProviderLatency:
    """Compile ``path`` for the CPU with ``precision`` as OpenVINO's inference hint and time it."""
    path = Path(path)
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise ConfigError(f"bench: '{path}' needs its graph ('.xml') and weights ('.bin') side by side")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision: '{precision}' is not offered; choose one of {', '.join(PRECISIONS)}")
    ov = optional_import("openvino", "bench of OpenVINO IR")
    core = ov.Core()
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise ConfigError("--precision: bf16 needs a CPU with bf16 units (AVX-512 BF16 or AMX); this CPU has none")
    settings = {"INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": "1"}
    if threads:
        settings["INFERENCE_NUM_THREADS"] = threads
    try:
        model = core.read_model(str(path))
        compiled = core.compile_model(model, "CPU", settings)
    except Exception as error:  # OpenVINO raises its own exception types for unreadable graphs
        raise ConfigError(f"bench: OpenVINO cannot load '{path}': {str(error).splitlines()[0]}") from None
    request = compiled.create_infer_request()
    feeds = synthetic_inputs(model, batch, free_dimension)
    seconds = timing.timed(lambda: request.infer(feeds), repeats, warmup)
    latency = timing.latency_ms(seconds)
    return ProviderLatency(
        model=str(path),
        provider=f"OpenVINO CPU ({precision})",
        batch=batch,
        p50_ms=latency["p50"],
        p95_ms=latency["p95"],
        mean_ms=statistics.fmean(seconds) * 1000.0,
        throughput_per_s=timing.per_second(batch, seconds),
        repeats=repeats,
        inputs={name: {"shape": list(array.shape), "dtype": str(array.dtype)} for name, array in feeds.items()},
    )
