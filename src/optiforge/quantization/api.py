"""``quantize``: one verb for every scheme and engine.

Each engine is a builder ``(job, float_layers) -> Built`` registered in
``BUILDERS`` (:mod:`~optiforge.quantization.builders`); ``engine: auto``
(:mod:`~optiforge.quantization.engine_search`) is a :class:`optiforge.search.Search`
whose candidates are the installed engines' attempts
(:mod:`~optiforge.quantization.attempts`), measured for fidelity and
throughput against the float model, the fastest that meets the target kept
(:mod:`optiforge.bench.selection`); when none meets it, the float model ships
unchanged and the reason says so. With a target, a candidate that misses it
gets the mixed-precision search (:mod:`optiforge.quantization.sensitivity`).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path

from torch import nn

from optiforge.errors import ConfigError
from optiforge.exporters.onnx import OnnxModule
from optiforge.exporters.openvino import OpenVinoModule, copy_ir
from optiforge.quantization.config import QuantConfig
from optiforge.quantization.engine_choice import _quantize
from optiforge.quantization.memory import OnnxInMemory
from optiforge.quantization.result import QuantizeResult
from optiforge.training.finetune import Finetune


def quantize_with_result(
    model: nn.Module,
    config: QuantConfig | None = None,
    calibration: Iterable | None = None,
    *,
    validation: Iterable | None = None,
    finetune: Finetune | None = None,
    output_dir: str | Path | None = None,
    rankings: dict | None = None,
) -> QuantizeResult:
    """Quantize ``model`` as ``config`` says; the module and what was done (see :func:`quantize`).

    ``rankings`` (a dict the caller keeps) holds the per-layer sensitivity of each engine, so calls on the
    same model, data and settings that differ only in ``layers.float_most_sensitive`` rank the layers once.

    >>> import torch, optiforge
    >>> from optiforge.quantization import quantize_with_result
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> loader = [torch.randn(8, 16) for _ in range(4)]
    >>> result = quantize_with_result(model, optiforge.QuantConfig(scheme="int8_static", engine="torch"),
    ...                               calibration=loader)
    >>> result.engine, result.baseline_kept
    ('torch', False)
    """
    config = QuantConfig() if config is None else config
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"quantize: config must be a QuantConfig, got {type(config).__name__}")
    original, was_training = model, model.training
    if any(tensor.device.type != "cpu" for tensor in [*model.parameters(), *model.buffers()]):
        model = copy.deepcopy(model).cpu()  # int8 kernels are CPU kernels; the caller's model stays where it is
    model.eval()
    try:
        if output_dir is not None:
            return _quantize(original, model, config, calibration, validation, finetune, Path(output_dir), rankings)
        with tempfile.TemporaryDirectory(prefix="optiforge-quantize-") as folder:
            result = _quantize(original, model, config, calibration, validation, finetune, Path(folder), rankings)
            if isinstance(result.model, OnnxModule) and result.model.path is not None:
                result.model = OnnxInMemory(result.model)  # the folder goes; the graph stays in memory
            elif isinstance(result.model, OpenVinoModule):
                _keep_while_alive(result.model)  # the folder goes; the IR lives as long as the module
            return result
    finally:
        original.train(was_training)


def _keep_while_alive(model: OpenVinoModule) -> None:
    """Move the module's IR out of the temporary folder into one removed when the module is collected."""
    keep = Path(tempfile.mkdtemp(prefix="optiforge-openvino-"))
    model.path = copy_ir(model.path, keep / model.path.name)
    weakref.finalize(model, shutil.rmtree, keep, True)


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    calibration: Iterable | None = None,
    *,
    validation: Iterable | None = None,
    finetune: Finetune | None = None,
    output_dir: str | Path | None = None,
) -> nn.Module:
    """Quantize ``model`` as ``config`` says and return a module that runs.

    ``calibration`` yields model inputs (or ``(inputs, targets)`` pairs);
    ``validation`` (with labels for classifiers) measures fidelity for
    ``engine: auto`` and mixed precision; ``finetune`` (a
    :class:`~optiforge.training.finetune.Finetune`, e.g. ``finetuner(data)``)
    trains the fake-quantized model for ``qat_int8``. When no candidate meets
    the target, the float model is returned unchanged.
    :func:`quantize_with_result` also says what was done (engine and why,
    layers kept float, fidelity) and exports the result to ONNX.

    >>> import torch, optiforge
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> loader = [torch.randn(8, 16) for _ in range(4)]
    >>> quantized = optiforge.quantize(model, optiforge.QuantConfig(scheme="int8_static", engine="torch"),
    ...                                calibration=loader)
    >>> quantized(torch.randn(2, 16)).shape
    torch.Size([2, 4])
    """
    return quantize_with_result(
        model, config, calibration, validation=validation, finetune=finetune, output_dir=output_dir
    ).model
