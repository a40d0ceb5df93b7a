"""One builder per engine: ``(job, float_layers) -> Built``, registered in ``BUILDERS``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from optiforge.errors import ConfigError, ModelError
from optiforge.quantization import torch_engine
from optiforge.quantization.casts import check_cast
from optiforge.quantization.config import QuantConfig
from optiforge.training.finetune import Finetune

log = logging.getLogger("optiforge")

# fake quantization is fine-tuned gently: a tenth of the recipe's learning rate unless finetune.lr is set
QAT_LR_SCALE = 0.1


@dataclass
class Job:
    """What every builder needs: the float model, settings, data and a folder."""

    model: nn.Module
    config: QuantConfig
    batches: list[Any]  # calibration model inputs
    example: Any  # one batch of model inputs (tracing, export, timing)
    folder: Path
    finetune: Finetune | None = None
    layers: list[str] = field(default_factory=list)  # the layers meant for int8
    validation: list[Any] = field(default_factory=list)  # validation batches, labels kept (accuracy control)
    rankings: dict | None = None  # engine -> sensitivity rows, shared by calls that differ only in k


@dataclass
class Built:
    """One builder's output: the quantized model and the layers the engine had to leave float."""

    model: nn.Module
    unsupported: list[str]
    trained: nn.Module | None = None  # qat_int8: the fine-tuned fake-quantized model (its ONNX export)
    history: list[dict] = field(default_factory=list)


def _build_torch(job: Job, float_layers: list[str]) -> Built:
    scheme = job.config.scheme
    if scheme in ("fp16", "bf16"):
        cast = torch_engine.cast(job.model, scheme)
        check_cast(job.model, cast, job.example, job.config)
        return Built(cast, [])
    if scheme == "int8_dynamic":
        return Built(*torch_engine.dynamic(job.model, job.config, float_layers))
    trained, history = None, []
    if scheme == "int8_static":
        model = torch_engine.static(job.model, job.config, job.batches, float_layers)
    else:  # qat_int8
        if job.finetune is None:
            raise ConfigError(
                "quantize: scheme 'qat_int8' needs finetune= a fine-tune callable, e.g. "
                "optiforge.training.finetune.finetuner(data) (the recipe stage trains with the recipe's settings)"
            )
        prepared = torch_engine.prepare_qat(job.model, job.config, job.example, float_layers)
        result = job.finetune(prepared, job.config.finetune, name="qat", lr_scale=QAT_LR_SCALE)
        trained, history = result.model.cpu(), list(result.history)
        model = torch_engine.convert_qat(trained)
    return Built(model, torch_engine.unconverted_layers(model, float_layers, job.layers), trained, history)


def _build_pt2e(job: Job, float_layers: list[str]) -> Built:
    from optiforge.quantization import pt2e_engine

    scheme = job.config.scheme
    if scheme == "int8_static":
        return Built(pt2e_engine.static(job.model, job.batches, float_layers), [])
    if scheme == "int8_dynamic":
        return Built(*pt2e_engine.dynamic(job.model, job.example, float_layers))
    if job.finetune is None:
        raise ConfigError("quantize: scheme 'qat_int8' needs finetune= a fine-tune callable (see engine torch)")
    prepared = pt2e_engine.prepare_qat(job.model, job.example, float_layers)
    result = job.finetune(prepared, job.config.finetune, name="qat", lr_scale=QAT_LR_SCALE)
    return Built(pt2e_engine.convert_qat(result.model, job.example), [], None, list(result.history))


def _build_torchao(job: Job, float_layers: list[str]) -> Built:
    from optiforge.quantization.torchao_engine import quantize_torchao

    return Built(*quantize_torchao(job.model, job.config, float_layers))


def _build_onnxruntime(job: Job, float_layers: list[str]) -> Built:
    from optiforge.quantization.onnx_runtime import quantize_with_onnxruntime

    if job.example is None:
        raise ConfigError(
            "quantize: engine 'onnxruntime' exports the model and needs an example batch; pass calibration=loader"
        )
    batches = job.batches if job.config.scheme == "int8_static" else None
    return Built(
        *quantize_with_onnxruntime(job.model, job.config, batches, job.example, float_layers, job.folder, job.layers)
    )


def _build_openvino(job: Job, float_layers: list[str]) -> Built:
    from optiforge.quantization.openvino_engine import quantize_openvino

    config = job.config
    if config.scheme == "qat_int8":
        from optiforge.quantization.openvino_qat import quantize_aware

        if job.finetune is None:
            raise ConfigError("quantize: scheme 'qat_int8' needs finetune= a fine-tune callable (see engine torch)")
        if job.example is None:
            raise ConfigError("quantize: engine 'openvino' converts the model and needs an example batch")
        try:
            model, history, trained = quantize_aware(
                job.model, job.batches, job.example, float_layers, job.finetune, config, job.folder, QAT_LR_SCALE
            )
            return Built(model, [], trained, history)
        except ModelError as error:
            log.warning("%s; falling back to post-training int8 (scheme int8_static, no training)", error)
            config = config.model_copy(update={"scheme": "int8_static"})
    return Built(
        *quantize_openvino(job.model, config, job.batches, job.example, float_layers, job.folder, job.validation)
    )


BUILDERS: dict[str, Callable[[Job, list[str]], Built]] = {
    "torch": _build_torch,
    "pt2e": _build_pt2e,
    "torchao": _build_torchao,
    "onnxruntime": _build_onnxruntime,
    "openvino": _build_openvino,
}
