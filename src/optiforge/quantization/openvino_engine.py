"""The ``openvino`` engine: the model converted to OpenVINO, quantized by NNCF, run by OpenVINO's CPU plugin.

* ``bf16``: the float graph with OpenVINO's bf16 inference hint (refused on a
  CPU without bf16 units, where it would be emulated).
* ``int8_static``: NNCF post-training quantization calibrated on the recipe's
  batches; with ``target.max_metric_drop`` NNCF's accuracy-controlled variant
  keeps the layers that cost most accuracy in float until the drop fits
  (top-1 accuracy on the labelled validation batches; the quantize stage
  labels a float model's logit targets with their top-1 classes, so there
  it is top-1 agreement with the float model).
* ``qat_int8``: NNCF's fake quantization trained in PyTorch with the fine-tune
  callable, then converted to an int8 IR (:mod:`optiforge.quantization.openvino_qat`).
* ``int8_weight_only`` / ``int4_weight_only``: NNCF weight compression
  (int8 asymmetric per channel; int4 symmetric in groups of ``weights.group_size``).

Layers kept float (``layers.exclude``, mixed precision) become NNCF's ignored
scope, matched by module name (OpenVINO names a node ``__module.<name>/...``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.errors import ConfigError, DataError
from optiforge.exporters.openvino import OpenVinoModule, check_precision, convert, save_ir
from optiforge.imports import optional_import, quiet_loggers
from optiforge.quantization.calibration import model_inputs
from optiforge.quantization.config import OpenVinoOptions
from optiforge.quantization.fidelity import labels_of
from optiforge.quantization.openvino_scope import batchnorm_owners, first_row, float_node_names

log = logging.getLogger("optiforge")

SCHEMES = ("bf16", "int8_static", "int8_weight_only", "int4_weight_only")


def nncf():
    return optional_import("nncf", "the openvino quantize engine")


@contextlib.contextmanager
def _quiet():
    """NNCF logs statistics tables and draws progress bars on stdout for every call."""
    with contextlib.redirect_stdout(io.StringIO()), quiet_loggers("nncf"):
        yield


def _numpy(value: Any):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def feeds_for(input_names: Sequence[str]) -> Callable[[Any], Any]:
    """Loader batch (tensor, pair or mapping) → what the converted model takes (array or name → array)."""

    def feed(batch: Any) -> Any:
        inputs = model_inputs(batch)
        if isinstance(inputs, Mapping):
            missing = [name for name in input_names if name not in inputs]
            if missing:
                raise DataError(
                    f"quantize (openvino): batches lack the model inputs {missing}; they have {list(inputs)}"
                )
            return {name: _numpy(inputs[name]) for name in input_names}
        if isinstance(inputs, torch.Tensor) and len(input_names) == 1:
            return _numpy(inputs)
        raise DataError(f"quantize (openvino): cannot feed a batch of type {type(inputs).__name__} to {input_names}")

    return feed


def ignored_scope(float_layers: Sequence[str], node_names: Sequence[str] = ()):
    """NNCF's ignored scope for the module names ``float_layers`` (``None`` when there are none);
    ``node_names``: their nodes whose names do not say their module (convolutions fused with a BatchNorm)."""
    if not float_layers:
        return None
    patterns = [rf"__module\.{re.escape(name)}/.*" for name in float_layers]
    return nncf().IgnoredScope(names=list(node_names), patterns=patterns, validate=False)


def _labelled(batches: list) -> list:
    labelled = [batch for batch in batches if labels_of(batch) is not None]
    if not labelled:
        raise ConfigError(
            "quantize.target.max_metric_drop with engine 'openvino' needs validation batches with labels "
            "((inputs, targets) pairs, targets integer classes)"
        )
    return labelled


def _accuracy(feed: Callable[[Any], Any]) -> Callable:
    """NNCF's validation function: top-1 accuracy of a compiled model on labelled batches."""

    def validate(compiled: Any, batches: Any) -> float:
        correct = total = 0
        for batch in batches:
            outputs = compiled(feed(batch))[0]
            labels = labels_of(batch)
            correct += int((torch.from_numpy(outputs).argmax(1) == labels).sum())
            total += int(labels.numel())
        return correct / max(total, 1)

    return validate


def quantize_ir(
    converted: Any,
    scheme: str,
    *,
    calibration: Sequence[Any] = (),
    float_layers: Sequence[str] = (),
    group_size: int = 32,
    max_metric_drop: float | None = None,
    validation: Sequence[Any] = (),
    transformer: bool = False,
    options: OpenVinoOptions | None = None,
    batchnorm_owners: Mapping[str, str] | None = None,
):
    """An ``openvino.Model`` quantized by NNCF as ``scheme`` says (the model itself for ``bf16``).

    ``transformer``: NNCF's transformer preset (keeps softmax inputs and layer norms float, smooths activations).
    ``options``: NNCF's preset and bias correction for ``int8_static`` (default: NNCF's own defaults).
    ``batchnorm_owners`` (:func:`~optiforge.quantization.openvino_scope.batchnorm_owners`) finds the float
    layers among convolutions OpenVINO fused with their BatchNorm.
    """
    if scheme == "bf16":
        return converted
    library = nncf()
    names = [item.get_any_name() for item in converted.inputs]
    feed = feeds_for(names)
    fused = float_node_names(converted, float_layers, batchnorm_owners) if float_layers and batchnorm_owners else []
    scope = ignored_scope(float_layers, fused)
    with _quiet():
        if scheme == "int8_static":
            if not calibration:
                raise ConfigError("quantize: scheme 'int8_static' with engine 'openvino' needs calibration batches")
            dataset = library.Dataset(list(calibration), feed)
            options = options or OpenVinoOptions()
            settings = static_settings(options)
            if scope is not None:
                settings["ignored_scope"] = scope
            if transformer:
                settings["model_type"] = library.ModelType.TRANSFORMER
            advanced = advanced_parameters(options)
            if max_metric_drop is None:
                if advanced is not None:
                    settings["advanced_parameters"] = advanced
                return library.quantize(converted, dataset, subset_size=_samples(calibration), **settings)
            if advanced is not None:  # the accuracy-controlled variant names the same argument differently
                settings["advanced_quantization_parameters"] = advanced
            labelled = _labelled(list(validation))
            return library.quantize_with_accuracy_control(
                converted,
                dataset,
                library.Dataset(labelled),
                validation_fn=_accuracy(feed),
                max_drop=max_metric_drop,
                drop_type=library.DropType.ABSOLUTE,
                subset_size=_samples(calibration),
                **settings,
            )
        if scheme == "int8_weight_only":
            mode, extra = library.CompressWeightsMode.INT8_ASYM, {}
        elif scheme == "int4_weight_only":
            mode, extra = library.CompressWeightsMode.INT4_SYM, {"group_size": group_size, "ratio": 1.0}
        else:
            raise ConfigError(f"quantize: engine 'openvino' runs {', '.join(SCHEMES)}, not '{scheme}'")
        return library.compress_weights(converted, mode=mode, ignored_scope=scope, **extra)


def static_settings(options: OpenVinoOptions) -> dict[str, Any]:
    """Keyword arguments of ``nncf.quantize`` for ``options``: the bias correction, and the preset when set."""
    settings: dict[str, Any] = {"fast_bias_correction": options.bias_correction != "full"}
    if options.preset is not None:
        settings["preset"] = getattr(nncf().QuantizationPreset, options.preset.upper())
    return settings


def advanced_parameters(options: OpenVinoOptions) -> Any:
    """NNCF's advanced quantization parameters for ``options`` (``None``: NNCF's defaults)."""
    if options.bias_correction != "none":
        return None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    return AdvancedQuantizationParameters(disable_bias_correction=True)


def _samples(batches: Sequence[Any]) -> int:
    """NNCF counts calibration items (our batches), not samples."""
    return max(1, len(batches))


def quantize_openvino(
    model: nn.Module,
    config: Any,
    batches: list[Any],
    example: Any,
    float_layers: list[str],
    folder: Path,
    validation: list[Any] | None = None,
) -> tuple[OpenVinoModule, list[str]]:
    """Convert ``model``, quantize it with NNCF, write the IR under ``folder``; an :class:`OpenVinoModule` and
    the layers left float by the engine (none: NNCF quantizes every MatMul/Convolution it is not told to skip)."""
    if example is None:
        raise ConfigError(
            "quantize: engine 'openvino' converts the model and needs an example batch; pass calibration=loader"
        )
    precision = "bf16" if config.scheme == "bf16" else "f32"
    check_precision(precision)
    converted = convert(model, example)
    owners = batchnorm_owners(model, first_row(example)) if float_layers else {}
    quantized = quantize_ir(
        converted,
        config.scheme,
        calibration=batches,
        float_layers=float_layers,
        group_size=config.weights.group_size,
        max_metric_drop=config.target.max_metric_drop,
        validation=validation or [],
        options=config.calibration.openvino,
        batchnorm_owners=owners,
    )
    stem = "-".join([config.scheme, *(["mixed"] if float_layers else [])])
    path = save_ir(quantized, Path(folder) / f"{stem}.xml")
    return OpenVinoModule(path, precision), []


def openvino_export_for(
    config: Any, model: nn.Module, batches: list[Any], float_layers: list[str], quantized: nn.Module | None
) -> Callable[[Path, Any], Path]:
    """``export: [openvino]`` of a quantize result: its IR when the engine was OpenVINO; otherwise the float
    original converted and quantized by NNCF with the same scheme, batches and float layers (the float IR,
    with a warning, for a scheme NNCF does not offer)."""

    def export(path: Path, example_input: Any) -> Path:
        from optiforge.exporters.openvino import copy_ir

        if isinstance(quantized, OpenVinoModule):
            return copy_ir(quantized.path, Path(path))
        scheme = config.scheme if config.scheme in SCHEMES and config.scheme != "bf16" else None
        if scheme is None:
            log.warning("export openvino: scheme '%s' has no OpenVINO int8 form; writing the float IR", config.scheme)
        example = batches[0] if batches else example_input
        converted = convert(model, example)
        if scheme is not None and (batches or scheme != "int8_static"):
            converted = quantize_ir(
                converted,
                scheme,
                calibration=batches,
                float_layers=float_layers,
                group_size=config.weights.group_size,
                options=config.calibration.openvino,
                batchnorm_owners=batchnorm_owners(model, first_row(example)) if float_layers else {},
            )
        return save_ir(converted, path)

    return export
