"""``qat_int8`` with ``engine: openvino``: NNCF's fake quantization trained in PyTorch, shipped as an OpenVINO IR.

BatchNorms are folded into the convolutions they follow first, as OpenVINO folds
them, so the weights the fake quantizers round are the ones that run in int8 and
training cannot move BatchNorm statistics. NNCF's PyTorch post-training
quantization places and calibrates the quantizers (the places its OpenVINO path
chooses: per-channel weights, per-tensor activations); the fine-tune callable
then trains weights and quantizer ranges together with the model kept in
evaluation mode (no dropout or drop-connect: the targets are the float model's
outputs). OpenVINO converts the trained model, fake quantizers included, into
an int8 IR.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.errors import ConfigError, ModelError
from optiforge.exporters.openvino import OpenVinoModule, convert, save_ir
from optiforge.imports import optional_import, quiet_loggers
from optiforge.quantization.calibration import model_inputs
from optiforge.quantization.openvino_scope import batchnorm_owners, first_row
from optiforge.training.finetune import Finetune

log = logging.getLogger("optiforge")

# NNCF compiles its CPU fake-quantization kernels on first use and gives up after 60 s, leaving a lock behind
# that blocks every later attempt; a loaded two-core machine needs longer
EXTENSION_TIMEOUT_VARIABLE = "NNCF_EXTENSION_LOAD_TIMEOUT"
EXTENSION_TIMEOUT_S = "900"


class TrainedInEvalMode(nn.Module):
    """Trains ``model`` while it stays in evaluation mode (dropout, drop-connect and BatchNorm as at inference)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.takes_mapping = getattr(model, "takes_mapping", False)

    def train(self, mode: bool = True) -> TrainedInEvalMode:
        self.training = mode
        self.model.eval()
        return self

    def forward(self, *inputs: Any, **named: Any) -> Any:
        return self.model(*inputs, **named)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def fold_batchnorms(model: nn.Module, example: Any) -> nn.Module:
    """A copy of ``model`` (evaluation mode) with each BatchNorm that follows a convolution folded into it."""
    folded = copy.deepcopy(model).cpu().eval()
    modules = dict(folded.named_modules())
    for norm, layer in batchnorm_owners(folded, first_row(example)).items():
        convolution, batchnorm = modules[layer], modules[norm]
        if not isinstance(convolution, nn.Conv2d | nn.Conv1d | nn.Conv3d) or batchnorm.running_mean is None:
            continue
        _set_module(folded, layer, torch.nn.utils.fusion.fuse_conv_bn_eval(convolution, batchnorm))
        _set_module(folded, norm, nn.Identity())
    return folded


def _nncf():
    os.environ.setdefault(EXTENSION_TIMEOUT_VARIABLE, EXTENSION_TIMEOUT_S)
    return optional_import("nncf", "quantization-aware training for the openvino engine")


def torch_ignored_scope(float_layers: Sequence[str]):
    """NNCF's ignored scope for the PyTorch graph: every operation inside the modules ``float_layers``."""
    if not float_layers:
        return None
    patterns = [rf"^{re.escape(name)}/.*" for name in float_layers]
    return _nncf().IgnoredScope(patterns=patterns, validate=False)


def prepare(model: nn.Module, batches: Sequence[Any], float_layers: Sequence[str]) -> nn.Module:
    """``model`` with BatchNorms folded and NNCF's fake quantizers placed and calibrated on ``batches``.

    A model NNCF cannot trace raises a :class:`ModelError` naming the operation NNCF reported."""
    if not batches:
        raise ConfigError("quantize: scheme 'qat_int8' with engine 'openvino' needs calibration batches")
    library = _nncf()
    folded = fold_batchnorms(model, model_inputs(batches[0]))
    dataset = library.Dataset(list(batches), model_inputs)
    try:
        with contextlib.redirect_stdout(io.StringIO()), quiet_loggers("nncf"):
            return library.quantize(
                folded, dataset, subset_size=max(1, len(batches)), ignored_scope=torch_ignored_scope(float_layers)
            )
    except Exception as error:  # NNCF raises its own and PyTorch's exception types while tracing
        message = " ".join(str(error).split())[:400]
        raise ModelError(
            f"quantize: NNCF cannot place fake quantizers in {type(model).__name__} for qat_int8 "
            f"({type(error).__name__}: {message})"
        ) from None


def quantize_aware(
    model: nn.Module,
    batches: Sequence[Any],
    example: Any,
    float_layers: Sequence[str],
    finetune: Finetune,
    config: Any,
    folder: Path,
    lr_scale: float,
) -> tuple[OpenVinoModule, list[dict], nn.Module]:
    """Fine-tune NNCF's fake-quantized ``model`` with ``finetune`` and write the int8 IR under ``folder``;
    the module running it, the training history and the trained model with PyTorch's own fake quantizers
    (what the ONNX export writes as QuantizeLinear/DequantizeLinear pairs)."""
    prepared = prepare(model, batches, float_layers)
    result = finetune(TrainedInEvalMode(prepared), config.finetune, name="qat", lr_scale=lr_scale)
    trained = result.model.model if isinstance(result.model, TrainedInEvalMode) else result.model
    with warnings.catch_warnings():  # tracing reads the quantizers' levels as constants, as intended
        warnings.simplefilter("ignore")
        converted = convert(trained.cpu(), example)
    stem = "-".join(["qat_int8", *(["mixed"] if float_layers else [])])
    library = _nncf()
    native = library.strip(trained, do_copy=True, strip_format=library.StripFormat.NATIVE, example_input=example)
    return OpenVinoModule(save_ir(converted, Path(folder) / f"{stem}.xml")), list(result.history), native
