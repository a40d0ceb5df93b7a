"""Which engine can run which scheme on a CPU, and whether it is installed.

Measured on torch 2.13 / torchao 0.18 / onnxruntime 1.32 (x86 CPU):

* torch (``torch.ao.quantization``, FX graph mode, x86 kernels): int8 static
  and QAT for Conv/Linear, int8 dynamic for Linear (conv layers stay float),
  fp16/bf16 casts.
* pt2e (torchao's ``torchao.quantization.pt2e`` with ``X86InductorQuantizer``,
  run compiled by inductor): int8 static and QAT for Conv/Linear, int8 dynamic
  for Linear; ships as a ``torch.export`` program (``.pt2``).
* torchao: int8 weight-only, int8 dynamic activation + int8 weight (Linear
  only; without ``torch.compile`` its CPU path is much slower than float),
  int4 weight-only with group-wise scales through ``IntxWeightOnlyConfig``
  (``Int4WeightOnlyConfig`` needs CUDA or the ``mslk`` package on CPU).
* onnxruntime: int8 static (QDQ, Conv/Gemm/MatMul) and dynamic
  (ConvInteger/MatMulInteger) on the exported ONNX graph.
* openvino (OpenVINO 2026.4 + NNCF 3.4): int8 static (NNCF post-training
  quantization), QAT (NNCF's fake quantization trained in PyTorch, converted
  to an int8 IR: :mod:`optiforge.quantization.openvino_qat`), int8/int4 weight
  compression, bf16 by inference hint (:mod:`optiforge.quantization.openvino_engine`).
"""

from __future__ import annotations

import importlib.util

from optiforge.errors import DependencyError
from optiforge.hardware.capabilities import cpu_flags

SUPPORT: dict[str, tuple[str, ...]] = {
    "int8_dynamic": ("torch", "pt2e", "torchao", "onnxruntime"),
    "int8_static": ("torch", "pt2e", "onnxruntime", "openvino"),
    "int8_weight_only": ("torchao", "openvino"),
    "int4_weight_only": ("torchao", "openvino"),
    "fp16": ("torch",),
    "bf16": ("torch", "openvino"),
    "qat_int8": ("torch", "pt2e", "openvino"),
}

# the Python package each engine needs
PACKAGES = {
    "torch": "torch",
    "pt2e": "torchao",
    "torchao": "torchao",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
}


def engines_for(scheme: str) -> tuple[str, ...]:
    return SUPPORT.get(scheme, ())


def installed(engine: str) -> bool:
    return importlib.util.find_spec(PACKAGES[engine]) is not None


def require(engine: str) -> None:
    """Raise a :class:`DependencyError` naming the option when ``engine`` is missing."""
    if not installed(engine):
        raise DependencyError(
            f"quantize.engine: '{engine}' needs the '{PACKAGES[engine]}' package, which is not installed; "
            f"pip install {PACKAGES[engine]} or choose engine: auto"
        )


# schemes that fine-tune: engine: auto trains with the first installed engine only, never once per engine
TRAINED = ("qat_int8",)


def candidates(scheme: str) -> list[str]:
    """Installed engines able to run ``scheme`` (what ``engine: auto`` measures).

    ``pt2e`` joins only on CPUs with AMX-INT8 units. Elsewhere its compile costs tens of seconds on
    small machines for no gain: on an AVX-512 VNNI CPU without AMX, the MNIST-1D CNN ran at 19.6k
    samples/s through PT2E + inductor against 118k through torch.ao's eager x86 kernels (batch 256,
    benchmarks/pt2e.py). Name ``engine: pt2e`` to use it there.
    """
    found = [engine for engine in engines_for(scheme) if installed(engine)]
    if "amx_int8" not in cpu_flags():
        found = [engine for engine in found if engine != "pt2e"]
    return found[:1] if scheme in TRAINED else found
