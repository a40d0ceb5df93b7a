"""The zoo's operations and its refusal rules: every cell works (checked on outputs) or is refused by a rule."""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

import optiforge
from optiforge.data.builtin import TaskData
from optiforge.errors import OptiforgeError

# rule → the message of the optiforge error that refuses a cell by it (documented in docs/zoo.md)
RULES: dict[str, str] = {
    "int8_dynamic needs Linear layers": r"scheme 'int8_dynamic' quantizes Linear layers",
    "torchao int8 needs Linear layers": r"torchao's \w+ quantizes Linear layers",
    "structured pruning cannot follow the graph": (
        r"structured pruning (cannot prune|cannot follow|left every chosen layer)"
    ),
    "the output layer is kept, and it is the only Linear/Conv layer": r"keeps the last layer .* it is the only",
    "ONNX export cannot trace the model": r"^onnx(: | export)",
    "shrink has no student builder for the family": r"^shrink: no student builder for",
    "shrink leaves out residual blocks only": r"^shrink\.depth: .* has no residual block",
    "Torch-Pruning cannot narrow the graph": r"^shrink: (cannot narrow|the student of .* (does not run|gives outputs))",
}


# cells that fail today, each with why; the slow test fails if any other cell fails, or one of these starts working
KNOWN_GAPS: dict[tuple[str, str], str] = {}


@dataclass
class Cell:
    outcome: str  # works | refused | FAILED
    note: str


def _outputs(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        output = model(example)
    assert isinstance(output, torch.Tensor), f"the result returns {type(output).__name__}, not a tensor"
    return output.float()


def _prune(model, example):
    from optiforge.compress import PruneConfig, prune_with_result

    result = prune_with_result(model, PruneConfig(sparsity=0.5), example_inputs=example)
    assert result.weight_sparsity > 0.3, f"weight sparsity {result.weight_sparsity:.3f} after pruning half"
    return result.model, f"sparsity {result.weight_sparsity:.2f}, {len(result.layers)} layers"


def _structured(model, example):
    from optiforge.compress import PruneConfig, prune_with_result

    before = sum(parameter.numel() for parameter in model.parameters())
    result = prune_with_result(model, PruneConfig(method="structured", sparsity=0.3), example_inputs=example)
    after = sum(parameter.numel() for parameter in result.model.parameters())
    assert after < before, "structured pruning removed nothing"
    left = [name for name in result.skipped if "left alone" in result.reasons.get(name, "")]
    return result.model, f"{after / before:.0%} of params" + (f", {len(left)} layers left alone" if left else "")


def _share(model, example):
    from optiforge.compress import ShareConfig, share_with_result

    result = share_with_result(model, ShareConfig(clusters=16), example_inputs=example)
    assert result.layers, "nothing shared"
    return result.model, f"{len(result.layers)} layers"


def _factorize(model, example):
    from optiforge.compress import FactorizeConfig, factorize_with_result

    result = factorize_with_result(model, FactorizeConfig(rank_ratio=0.25), example_inputs=example)
    assert result.layers, f"no layer factorized (skipped: {result.skipped})"
    return result.model, f"{len(result.layers)} layers"


def _quantize(scheme: str, engine: str) -> Callable:
    def run(model, example):
        from optiforge.quantization import quantize_with_result

        config = optiforge.QuantConfig(scheme=scheme, engine=engine)
        with tempfile.TemporaryDirectory() as folder:
            result = quantize_with_result(model, config, calibration=[example, example], output_dir=folder)
            assert not result.baseline_kept, result.reason
            output = _outputs(result.model, example)
        unsupported = f", {len(result.unsupported_layers)} left float" if result.unsupported_layers else ""
        return output, f"{engine}{unsupported}"

    return run


def _packed(model, example):
    from optiforge.compress import load_packed, write_packed

    with tempfile.TemporaryDirectory() as folder:
        path = write_packed(model, Path(folder) / "model.ofpk")
        loaded = load_packed(path, copy.deepcopy(model))
    assert torch.equal(_outputs(loaded, example), _outputs(model, example)), "outputs differ after the round trip"
    return loaded, "equal outputs"


def _onnx(model, example):
    from optiforge.exporters.onnx import OnnxModule, export_onnx

    with tempfile.TemporaryDirectory() as folder:
        runtime = OnnxModule(export_onnx(model, Path(folder) / "model.onnx", example))
        output = _outputs(runtime, example)
    difference = float((output - _outputs(model, example)).abs().max())
    assert difference < 1e-3, f"ONNX Runtime differs by {difference}"
    return output, f"max diff {difference:.1e}"


def _task_data(model: nn.Module, example: torch.Tensor) -> TaskData:
    """The example as every split, labelled with the model's own predictions; a causal language model's
    targets are its token ids (judged on the next token)."""
    outputs = _outputs(model, example)
    causal = getattr(model, "task", None) == "causal_lm"
    split = TensorDataset(example, example if causal else outputs.argmax(dim=-1))
    task = "causal_lm" if causal else "classification"
    return TaskData(split, split, split, tuple(example.shape[1:]), outputs.shape[-1], task=task)


def _measure(model, example):
    from optiforge.bench.measure import measure
    from optiforge.models.builtin import count_parameters

    output = _outputs(model, example)
    split = TensorDataset(example, torch.zeros(output.shape[:-1], dtype=torch.long))
    data = TaskData(split, split, split, tuple(example.shape[1:]), output.shape[-1])
    config = optiforge.MeasureConfig(latency_repeats=2, warmup=0, throughput_batch=2, throughput_repeats=1)
    result = measure(model, data, config=config)  # a causal language model declares its task: next-token loss
    assert result.params == count_parameters(model)[0] > 0, f"{result.params} parameters counted"
    assert result.value is not None and 0 <= result.value <= 1, f"{result.metric} {result.value}"
    return None, f"{result.params} params, {result.metric}"


def _shrink(model, example):
    from optiforge.distillation.students import shrink
    from optiforge.models.builtin import count_parameters

    student = shrink(model, width=0.5, depth=0.5, example_input=example)
    before, after = count_parameters(model)[0], count_parameters(student)[0]
    assert after < before, f"the student has {after} parameters, the teacher {before}"
    return student, f"{after / before:.0%} of params"


def _distill(model, example):
    """One epoch of distillation into a narrower student; a wrapped transformers model is distilled unwrapped."""
    from optiforge.distillation import DistillConfig, distill
    from optiforge.distillation.students import shrink

    inner = getattr(model, "model", None)
    teacher = inner if hasattr(inner, "config") else model  # the transformers model returns a ModelOutput
    student = shrink(teacher, width=0.5, example_input=example)
    data = _task_data(model, example)
    config = DistillConfig(finetune={"epochs": 1}, mixing={"kind": "none"})
    train = optiforge.TrainConfig(batch_size=2)
    trained = distill(teacher, student, data, config, train=train, progress=False)
    if teacher is not model:
        wrapper = copy.copy(model)  # the zoo's wrapper, around the trained student
        wrapper.model = trained
        trained = wrapper
    return trained, "1 epoch" + (" on ModelOutputs" if teacher is not model else "")


OPERATIONS: dict[str, Callable] = {
    "prune magnitude": _prune,
    "prune structured": _structured,
    "share": _share,
    "factorize": _factorize,
    "int8_dynamic (torch)": _quantize("int8_dynamic", "torch"),
    "int8_weight_only (torchao)": _quantize("int8_weight_only", "torchao"),
    "int8_static (onnxruntime)": _quantize("int8_static", "onnxruntime"),
    "fp16": _quantize("fp16", "torch"),
    "bf16": _quantize("bf16", "torch"),
    "packed round trip": _packed,
    "onnx export": _onnx,
    "measure": _measure,
    "shrink": _shrink,
    "distill": _distill,
}


def zoo_cell(name: str, build: Callable[[], nn.Module], example: torch.Tensor, operation: str) -> Cell:
    """:func:`run_cell`, a known gap marked ``gap`` while it still fails."""
    cell = run_cell(build, example, operation)
    if (name, operation) in KNOWN_GAPS:
        return Cell("gap", cell.note) if cell.outcome == "FAILED" else Cell("FAILED", f"a known gap now {cell.outcome}")
    return cell


def run_cell(build: Callable[[], nn.Module], example: torch.Tensor, operation: str) -> Cell:
    """One cell: the operation on a fresh model; its result runs with the right output shape, or a rule refuses it."""
    model = build().eval()
    reference = _outputs(model, example)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    try:
        result, note = OPERATIONS[operation](model, example)
    except OptiforgeError as error:
        message = str(error)
        rule = next((name for name, pattern in RULES.items() if re.search(pattern, message)), None)
        if rule is None:
            return Cell("FAILED", f"refused by no documented rule: {message}")
        unchanged = model.state_dict().keys() == state.keys() and all(
            torch.equal(model.state_dict()[name], tensor) for name, tensor in state.items()
        )
        if not unchanged:
            return Cell("FAILED", f"refused ({rule}) but the caller's model was changed")
        return Cell("refused", rule)
    except AssertionError as error:
        return Cell("FAILED", str(error).splitlines()[0])
    except Exception as error:  # a raw traceback is a failed cell
        return Cell("FAILED", f"raw {type(error).__name__}: {str(error).splitlines()[0][:160]}")
    if isinstance(result, nn.Module):
        try:
            output = _outputs(result, example)
        except Exception as error:
            return Cell("FAILED", f"the result crashes: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
    else:
        output = result
    if output is not None and output.shape != reference.shape:
        return Cell("FAILED", f"output shape {tuple(output.shape)}, expected {tuple(reference.shape)}")
    return Cell("works", note)


def markdown(rows: dict[str, dict[str, Cell]]) -> str:
    """The matrix as a Markdown table: ✓ works, ✗ refused (by the rule in the notes), FAILED."""
    operations = list(OPERATIONS)
    lines = ["| model | " + " | ".join(operations) + " |", "|" + " --- |" * (len(operations) + 1)]
    refusals: dict[str, list[str]] = {}
    for model, cells in rows.items():
        marks = []
        for operation in operations:
            cell = cells[operation]
            marks.append({"works": "✓", "refused": "refused", "gap": "gap"}.get(cell.outcome, "**FAILED**"))
            if cell.outcome == "refused":
                refusals.setdefault(cell.note, []).append(f"{model} / {operation}")
        lines.append(f"| {model} | " + " | ".join(marks) + " |")
    lines.append("")
    for (model, operation), why in KNOWN_GAPS.items():
        if model in rows:
            lines.append(f"- gap: {model} / {operation}: {why}")
    for rule, cells in refusals.items():
        lines.append(f"- refused by *{rule}*: {', '.join(cells)}")
    return "\n".join(lines) + "\n"
