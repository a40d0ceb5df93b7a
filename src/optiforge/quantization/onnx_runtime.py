"""ONNX Runtime's quantizer on an exported graph: path in, path out.

:func:`quantize_onnx` works on any ONNX file (a classifier, a sentence
encoder with ``input_ids``/``attention_mask``): static int8 in QDQ format
(calibrated by a reader built from any loader) or dynamic int8
(ConvInteger/MatMulInteger), per-channel weights, and named nodes left float.
:func:`quantize_with_onnxruntime` is the engine: export float, quantize, wrap.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.errors import ConfigError, DependencyError
from optiforge.exporters.onnx import OnnxModule, export_onnx, nodes_of_layers
from optiforge.imports import quiet_loggers
from optiforge.layers import module_of_node
from optiforge.quantization.calibration import PERCENTILE, model_inputs

log = logging.getLogger("optiforge")


def _numpy(value: Any):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def feeds_from_batch(batch: Any, input_names: Sequence[str]) -> dict:
    """One calibration feed (name → array) from a loader batch of any structure."""
    inputs = model_inputs(batch)
    if isinstance(inputs, Mapping):
        missing = [name for name in input_names if name not in inputs]
        if missing:
            raise ConfigError(
                f"quantize: calibration batches lack the model inputs {missing}; they have {sorted(inputs)}"
            )
        return {name: _numpy(inputs[name]) for name in input_names}
    if isinstance(inputs, torch.Tensor):
        if len(input_names) != 1:
            raise ConfigError(
                f"quantize: the ONNX model takes {list(input_names)}, calibration batches give one tensor"
            )
        return {input_names[0]: _numpy(inputs)}
    raise ConfigError(f"quantize: cannot feed a calibration batch of type {type(inputs).__name__} to ONNX Runtime")


def calibration_reader(loader: Iterable, input_names: Sequence[str], batches: int | None = None):
    """An ONNX Runtime ``CalibrationDataReader`` over the first ``batches`` of ``loader``."""
    from onnxruntime.quantization import CalibrationDataReader

    class LoaderReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = []
            for batch in loader:
                self.feeds.append(feeds_from_batch(batch, input_names))
                if batches is not None and len(self.feeds) >= batches:
                    break
            if not self.feeds:
                raise ConfigError("quantize: the calibration loader yielded no batches")
            self._iterator = iter(self.feeds)

        def get_next(self) -> dict | None:
            return next(self._iterator, None)

        def rewind(self) -> None:
            self._iterator = iter(self.feeds)

    return LoaderReader()


def _calibration_method(observer: str):
    from onnxruntime.quantization import CalibrationMethod

    if observer in ("minmax", "moving_average"):
        return CalibrationMethod.MinMax, {"CalibMovingAverage": observer == "moving_average"}
    if observer == "percentile":
        return CalibrationMethod.Percentile, {"CalibPercentile": PERCENTILE}
    raise ConfigError(
        f"quantize.observer: '{observer}' is not offered by ONNX Runtime's calibrator; "
        "use minmax, moving_average or percentile with engine: onnxruntime"
    )


def input_names_of(path: str | Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {item.name for item in graph.initializer}
    return [item.name for item in graph.input if item.name not in initializers]


def quantize_onnx(
    source: str | Path,
    destination: str | Path,
    *,
    scheme: str = "int8_static",
    calibration: Iterable | None = None,
    calibration_batches: int | None = 8,
    observer: str = "minmax",
    per_channel: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
    preprocess: bool = True,
    extra_options: Mapping[str, Any] | None = None,
) -> Path:
    """Quantize an ONNX file with ONNX Runtime and write ``destination``.

    ``calibration`` is any iterable of batches (tensor, ``(inputs, targets)``
    or mapping name → tensor); it is needed for ``int8_static``.
    ``preprocess``: ONNX Runtime's shape inference and graph clean-up first;
    off for graphs already optimised with contrib ops (the clean-up may rename
    the nodes ``nodes_to_exclude`` names). ``extra_options`` go to the quantizer.
    """
    try:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise DependencyError("quantize.engine: 'onnxruntime' is not installed; pip install onnxruntime") from None
    source, destination = Path(source), Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="optiforge-ort-"))
    try:
        prepared = work / "prepared.onnx" if preprocess else source
        if preprocess:
            try:  # shape inference + graph clean-up, as ONNX Runtime recommends before quantizing
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
            except Exception as error:  # some graphs defeat symbolic shape inference; quantize them as they are
                log.info("onnx pre-processing skipped (%s)", error)
                shutil.copyfile(source, prepared)
        output = work / "quantized.onnx"
        # dynamic int8 first splits a Gemm into MatMul + Add and names the MatMul '<gemm>_MatMul'
        excluded = [*nodes_to_exclude, *(name + "_MatMul" for name in nodes_to_exclude)]
        common = {
            "per_channel": per_channel,
            "nodes_to_exclude": excluded,
            "op_types_to_quantize": list(op_types) if op_types else None,
        }
        extra_options = dict(extra_options or {})
        if scheme == "int8_static":
            if calibration is None:
                raise ConfigError("quantize: scheme 'int8_static' needs a calibration loader")
            method, extra = _calibration_method(observer)
            reader = calibration_reader(calibration, input_names_of(prepared), calibration_batches)
            # the calibrators print progress, and the quantizer warns on the root logger
            with contextlib.redirect_stdout(io.StringIO()), quiet_loggers(""):
                quantize_static(
                    str(prepared),
                    str(output),
                    reader,
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=method,
                    extra_options={**extra, **extra_options},
                    **common,
                )
        elif scheme == "int8_dynamic":
            with quiet_loggers(""):
                quantize_dynamic(
                    str(prepared), str(output), weight_type=QuantType.QInt8, extra_options=extra_options, **common
                )
        else:
            raise ConfigError(f"quantize: ONNX Runtime's quantizer runs int8_static and int8_dynamic, not '{scheme}'")
        shutil.move(str(output), destination)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return destination


def float_nodes(path: str | Path, float_layers: Sequence[str]) -> list[str]:
    """The nodes of the graph at ``path`` exported from ``float_layers`` (module names), to keep float."""
    if not float_layers:
        return []
    return [node for nodes in nodes_of_layers(path, float_layers).values() for node in nodes]


WEIGHTED_OPS = {"Conv", "Gemm", "MatMul"}
INTEGER_OPS = {"ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"}


def unquantized_layers(path: str | Path, module_names: Sequence[str]) -> list[str]:
    """Modules whose Conv/Gemm/MatMul nodes ONNX Runtime left with float weights."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    left = []
    for name in module_names:
        nodes = [node for node in graph.node if module_of_node(node.name) == name]
        if not nodes or any(node.op_type in INTEGER_OPS for node in nodes):
            continue
        weighted = [node for node in nodes if node.op_type in WEIGHTED_OPS and len(node.input) > 1]
        if weighted and all(producers.get(node.input[1]) != "DequantizeLinear" for node in weighted):
            left.append(name)
    return left


def quantize_with_onnxruntime(
    model: nn.Module,
    config: Any,
    batches: list[Any] | None,
    example: Any,
    float_layers: list[str],
    folder: Path,
    layers: Sequence[str] = (),
) -> tuple[nn.Module, list[str]]:
    """Export ``model``, quantize it with ONNX Runtime; returns an :class:`OnnxModule` and the
    ``layers`` (meant for int8) that ONNX Runtime left float."""
    folder.mkdir(parents=True, exist_ok=True)
    float_path = export_onnx(model, folder / "float.onnx", example)
    excluded = float_nodes(float_path, float_layers)
    stem = "-".join([config.scheme, *(["mixed"] if float_layers else [])])
    quantized = quantize_onnx(
        float_path,
        folder / f"{stem}.onnx",
        scheme=config.scheme,
        calibration=batches,
        calibration_batches=config.calibration.batches,
        observer=config.calibration.observer,
        per_channel=config.weights.per_channel,
        nodes_to_exclude=excluded,
    )
    wanted = [name for name in layers if name not in float_layers]
    return OnnxModule(quantized), unquantized_layers(quantized, wanted)
