"""Stage ``quantize``: the :func:`optiforge.quantize` verb with the recipe's data.

Calibration batches come from the training split (shuffled), fidelity is
measured on the validation split (a float model's logit targets, task
``logit_fidelity``, count by their top-1 classes: accuracy is agreement),
``qat_int8`` fine-tunes with the stage's fine-tune callable. The artefact is the quantized file (int8 state dict,
packed int4 file or int8 ONNX), so the report's size is what ships; when no
candidate meets the target the float model ships and the row says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from optiforge.data.builtin import TaskData
from optiforge.data.loaders import make_loader
from optiforge.quantization.config import QuantConfig
from optiforge.stages.base import StageContext, StageOutput, register_stage
from optiforge.tasks import LogitFidelity


class TopClassLabels:
    """Batches ``(inputs, logits)`` of a float reference model as ``(inputs, its top-1 classes)``: the quantize
    verb's accuracy is then top-1 agreement with the reference, what ``target.max_metric_drop`` bounds."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        for inputs, logits in self.loader:
            yield inputs, logits.argmax(dim=1)

    def __len__(self) -> int:
        return len(self.loader)


def check_quantize(model: nn.Module, config: QuantConfig, data: TaskData) -> None:
    config.layers.check(model, "quantize.layers")


def _candidate_row(row: dict) -> dict:
    measured = row.get("fidelity", {})
    return {key: row.get(key) for key in ("engine", "throughput_per_s", "speedup", "target_met", "error")} | {
        "cosine": measured.get("cosine"),
        "metric_drop": measured.get("metric_drop"),
    }


@register_stage(
    "quantize",
    QuantConfig,
    "int8 dynamic/static, weight-only int8/int4, fp16/bf16 or QAT, "
    "engine chosen by measurement, optional mixed precision",
    check=check_quantize,
)
def quantize_stage(model: nn.Module, config: QuantConfig, ctx: StageContext) -> StageOutput:
    from optiforge.exporters.onnx import OnnxModule
    from optiforge.exporters.openvino import OpenVinoModule
    from optiforge.quantization import quantize_with_result, save_quantized
    from optiforge.quantization.calibration import take_batches
    from optiforge.quantization.openvino_engine import openvino_export_for

    calibration = make_loader(ctx.data.train, ctx.train_config.batch_size, shuffle=True, seed=ctx.train_config.seed)
    validation = make_loader(ctx.data.val, 256) if len(ctx.data.val) else make_loader(ctx.data.test, 256)
    if isinstance(ctx.task, LogitFidelity):
        validation = TopClassLabels(validation)
    result = quantize_with_result(
        model,
        config,
        calibration=calibration,
        validation=validation,
        finetune=ctx.finetuner,
        output_dir=ctx.stage_dir,
        rankings=ctx.shared_work(
            "quantize", config, {"layers": {"float_most_sensitive"}, "target": True, "sensitivity": True}
        ),
    )
    quantized = result.model
    if result.baseline_kept:
        artifact = None  # the float model: the runner saves its state dict
    elif isinstance(quantized, (OnnxModule, OpenVinoModule)):
        artifact = quantized.path
    else:
        artifact = save_quantized(quantized, ctx.stage_dir / f"model-{config.scheme}.pt")
    fidelity = result.fidelity.as_dict() if result.fidelity else {}
    info = {
        "scheme": config.scheme,
        "engine": result.engine,
        "engine_reason": result.reason,
        "baseline_kept": result.baseline_kept,
        "float_layers": result.float_layers,
        "unsupported_layers": result.unsupported_layers,
        "agreement": fidelity.get("agreement"),
        "output_cosine": fidelity.get("cosine"),
        "candidates": [_candidate_row(row) for row in result.candidates],
    }
    if result.sensitivity and result.engine:
        info["sensitivity"] = str((ctx.stage_dir / result.engine / "sensitivity.md").relative_to(ctx.run_dir))
    exports = {"onnx": result.export_onnx}
    if not result.baseline_kept:

        def export_openvino(path, example_input):  # calibration batches are drawn only when the IR is asked for
            batches = take_batches(calibration, config.calibration.batches)
            return openvino_export_for(config, model, batches, result.float_layers, quantized)(path, example_input)

        exports["openvino"] = export_openvino
    return StageOutput(quantized, artifact=artifact, info=info, history=result.history, exports=exports)
