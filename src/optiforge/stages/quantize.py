"""Stage ``quantize``: the :func:`optiforge.quantize` verb with the recipe's data.

Calibration batches come from the training split (shuffled), fidelity is
measured on the validation split, ``qat_int8`` fine-tunes with the recipe's
training settings. The artefact is the quantized file (int8 state dict,
packed int4 file or int8 ONNX), so the report's size is what ships.
"""

from __future__ import annotations

from torch import nn

from optiforge.data.builtin import TaskData
from optiforge.data.loaders import make_loader
from optiforge.quantization.config import QuantConfig
from optiforge.stages.base import StageContext, StageOutput, register_stage


def check_quantize(model: nn.Module, config: QuantConfig, data: TaskData) -> None:
    from optiforge.quantization.api import check_exclude

    check_exclude(model, config)


@register_stage(
    "quantize",
    QuantConfig,
    "int8 dynamic/static, weight-only int8/int4, fp16/bf16 or QAT, "
    "engine chosen by measurement, optional mixed precision",
    check=check_quantize,
)
def quantize_stage(model: nn.Module, config: QuantConfig, ctx: StageContext) -> StageOutput:
    from optiforge.exporters.onnx import OnnxModule
    from optiforge.quantization import quantize, save_quantized

    calibration = make_loader(ctx.data.train, ctx.train_config.batch_size, shuffle=True, seed=ctx.train_config.seed)
    validation = make_loader(ctx.data.val, 256) if len(ctx.data.val) else make_loader(ctx.data.test, 256)
    history: list[dict] = []

    def finetune(prepared: nn.Module, epochs: int) -> nn.Module:
        # fake quantization is fine-tuned gently: a tenth of the training rate unless qat_lr says otherwise
        lr = config.qat_lr or ctx.train_config.optimizer.lr / 10
        optimizer = ctx.train_config.optimizer.model_copy(update={"lr": lr})
        result = ctx.finetune(prepared, epochs, name="qat", optimizer=optimizer)
        history.extend(result.history)
        return result.model.cpu()

    quantized = quantize(
        model, config, calibration=calibration, validation=validation, finetune=finetune, output_dir=ctx.stage_dir
    )
    summary = quantized.optiforge_quantization
    if isinstance(quantized, OnnxModule):
        artifact = quantized.path
    else:
        artifact = save_quantized(quantized, ctx.stage_dir / f"model-{config.scheme}.pt")
    fidelity = summary.get("fidelity", {})

    def candidate(row: dict) -> dict:
        measured = row.get("fidelity", {})
        return {key: row.get(key) for key in ("engine", "throughput_per_s", "target_met", "error")} | {
            "cosine": measured.get("cosine"),
            "metric_drop": measured.get("metric_drop"),
        }

    info = {
        "scheme": config.scheme,
        "engine": summary["engine"],
        "engine_reason": summary["engine_reason"],
        "float_layers": summary["float_layers"],
        "unsupported_layers": summary["unsupported_layers"],
        "agreement": fidelity.get("agreement"),
        "output_cosine": fidelity.get("cosine"),
        "candidates": [candidate(row) for row in summary["candidates"]],
    }
    if summary["sensitivity"]:
        info["sensitivity"] = str((ctx.stage_dir / summary["engine"] / "sensitivity.md").relative_to(ctx.run_dir))
    return StageOutput(quantized, artifact=artifact, info=info, history=history)
