"""Latency of an exported ONNX model on an ONNX Runtime execution provider.

Accelerators without a PyTorch backend (NPUs, DSPs, inference ASICs) ship an
ONNX Runtime execution provider; running the exported file there is how an
optiforge model reaches them. Inputs are synthetic, shaped from the graph:
the batch dimension from ``batch``, other free dimensions from
``free_dimension`` (e.g. a sequence length).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from optiforge.bench import timing
from optiforge.errors import ConfigError, DependencyError

# Short names for the providers people type most.
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
}

_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


@dataclass
class ProviderLatency:
    """One provider's figures for one model (milliseconds per call at ``batch``).

    ``inputs`` records what was fed: input name → ``{"shape": [...], "dtype": "int64"}``.
    """

    model: str
    provider: str
    batch: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    throughput_per_s: float
    repeats: int
    inputs: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def installed_providers() -> list[str]:
    try:
        import onnxruntime
    except ImportError:
        raise DependencyError("bench: ONNX Runtime is not installed; pip install onnxruntime") from None
    return list(onnxruntime.get_available_providers())


def resolve_provider(name: str) -> str:
    """The full provider name for ``name`` (alias or full); a clear error when it is not installed."""
    full = PROVIDER_ALIASES.get(name.lower(), name)
    available = installed_providers()
    if full not in available:
        aliases = {value: key for key, value in PROVIDER_ALIASES.items()}
        listed = ", ".join(
            f"{provider} ({aliases[provider]})" if provider in aliases else provider for provider in available
        )
        raise ConfigError(
            f"--provider: '{name}' is not an installed ONNX Runtime execution provider; installed: {listed}. "
            "Other providers come with their own onnxruntime build (e.g. onnxruntime-gpu, onnxruntime-openvino)"
        )
    return full


def synthetic_inputs(session, batch: int, free_dimension: int) -> dict[str, np.ndarray]:
    """Inputs matching the graph: random floats, ones for integer inputs (ids, masks)."""
    generator = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():
        shape = []
        for axis, size in enumerate(spec.shape):
            if isinstance(size, int) and size > 0:
                shape.append(size)
            else:
                shape.append(batch if axis == 0 else free_dimension)
        dtype = _NUMPY_TYPES.get(spec.type)
        if dtype is None:
            raise ConfigError(f"bench: input '{spec.name}' has type {spec.type}, which bench cannot make up")
        feeds[spec.name] = made_up_input(shape, dtype, generator)
    return feeds


def made_up_input(shape: list[int], dtype: np.dtype, generator: np.random.Generator) -> np.ndarray:
    """An input to time a graph with: normal noise for floats, ones for integers (valid ids and masks)."""
    if np.issubdtype(dtype, np.floating):
        return generator.standard_normal(shape).astype(dtype)
    return np.ones(shape, dtype=dtype)


def bench_onnx(
    path: str | Path,
    provider: str = "cpu",
    *,
    batch: int = 1,
    free_dimension: int = 16,
    repeats: int = 50,
    warmup: int = 5,
    threads: int | None = None,
) -> ProviderLatency:
    """Run ``path`` on ``provider`` and time it (median and p95 over ``repeats`` calls after ``warmup``).

    >>> import optiforge.hardware.onnx_runtime as ort_bench
    >>> "CPUExecutionProvider" in ort_bench.installed_providers()
    True
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"bench: no ONNX file '{path}'")
    full = resolve_provider(provider)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=[full])
    except Exception as error:  # ONNX Runtime raises its own exception types for unreadable graphs
        raise ConfigError(f"bench: ONNX Runtime cannot load '{path}' on {full}: {str(error).splitlines()[0]}") from None
    if session.get_providers()[0] != full:
        # ONNX Runtime falls back to the CPU without failing when a provider cannot start.
        raise ConfigError(f"bench: {full} could not start (ONNX Runtime fell back to {session.get_providers()[0]})")
    feeds = synthetic_inputs(session, batch, free_dimension)
    seconds = timing.timed(lambda: session.run(None, feeds), repeats, warmup)
    latency = timing.latency_ms(seconds)
    return ProviderLatency(
        model=str(path),
        provider=full,
        batch=batch,
        p50_ms=latency["p50"],
        p95_ms=latency["p95"],
        mean_ms=statistics.fmean(seconds) * 1000.0,
        throughput_per_s=timing.per_second(batch, seconds),
        repeats=repeats,
        inputs={name: {"shape": list(array.shape), "dtype": str(array.dtype)} for name, array in feeds.items()},
    )
