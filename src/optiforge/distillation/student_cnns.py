"""Students of convolutional networks (torchvision, timm, your own): fewer residual blocks, narrower channels.

Depth: a residual block whose output has its input's shape can be left out
and the network still runs — the skip path carries its input on. Such a
block is found by running it with every weight set to zero: a residual
block then gives its input back (``x + 0``), any other block does not.
Each stage (the ``nn.Sequential`` holding the blocks) keeps its first block,
which changes the shape, and evenly spaced blocks after it.

Width: uniform structured channel pruning with Torch-Pruning at ratio
``1 − width``: the same family, narrower, initialised from the teacher's
largest-norm channels. The output layer keeps its width.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from optiforge.bench.budget import BudgetSpent, CpuBudget
from optiforge.distillation.outputs import output_tensor
from optiforge.errors import ModelError
from optiforge.imports import optional_import

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WEIGHTED = (nn.Linear, *_CONVOLUTIONS)


def is_cnn(model: nn.Module) -> bool:
    return any(isinstance(module, _CONVOLUTIONS) for module in model.modules())


def default_input(model: nn.Module) -> torch.Tensor:
    """One image (or signal) of the first convolution's channels: 224 × 224 for 2-D, 224 long for 1-D."""
    first = next(module for module in model.modules() if isinstance(module, _CONVOLUTIONS))
    return torch.randn(1, first.in_channels, *([224] * len(first.kernel_size)), dtype=first.weight.dtype)


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


def _run(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return output_tensor(model(example), "shrink")


def _stage_blocks(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[list[str], set[str]]]:
    """Stage path → (its blocks' names, those that are residual with the same input and output shape)."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, Any] = {}
    handles = []
    stages: dict[str, list[str]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        for child_name, child in module.named_children():
            if list(child.children()) and any(True for _ in child.parameters()):
                path = f"{name}.{child_name}" if name else child_name
                stages.setdefault(name, []).append(path)

                def record(_module, args, output, path=path):
                    if args and isinstance(args[0], torch.Tensor):  # copies: a later in-place op must not change them
                        inputs[path] = args[0].detach().clone()
                        outputs[path] = output.detach().clone() if isinstance(output, torch.Tensor) else output

                handles.append(child.register_forward_hook(record))
    try:
        _run(model, example)
    finally:
        for handle in handles:
            handle.remove()
    residual = {path for path in inputs if _is_residual(model.get_submodule(path), inputs[path], outputs[path])}
    # the innermost residual blocks: a stage of residual blocks is itself residual when zeroed
    innermost = {path for path in residual if not any(other.startswith(path + ".") for other in residual)}
    return {stage: (blocks, {path for path in blocks if path in innermost}) for stage, blocks in stages.items()}


def _is_residual(block: nn.Module, inputs: torch.Tensor, output: Any) -> bool:
    if not isinstance(output, torch.Tensor) or output.shape != inputs.shape:
        return False
    zeros = {name: torch.zeros_like(parameter) for name, parameter in block.named_parameters()}
    try:
        with torch.no_grad():
            zeroed = torch.func.functional_call(block, zeros, (inputs.clone(),))
    except Exception:  # noqa: BLE001  a block that cannot run alone is no block to leave out
        return False
    return isinstance(zeroed, torch.Tensor) and torch.allclose(zeroed, inputs, atol=1e-5)


def _kept_positions(count: int, kept: int) -> set[int]:
    return {min(count - 1, (i * count) // kept) for i in range(kept)}


def drop_blocks(model: nn.Module, depth: float | int, example: torch.Tensor) -> int:
    """Leave out residual blocks of each stage in place; returns how many residual blocks there were.

    A float ``depth`` keeps that share of each stage's blocks, an int that many per stage.
    """
    found = 0
    for stage_path, (blocks, residual) in _stage_blocks(model, example).items():
        found += len(residual)
        if not residual:
            continue
        count = len(blocks)
        kept = depth if isinstance(depth, int) else round(count * depth)
        keep = _kept_positions(count, max(1, min(count, kept))) | {0}
        stage = model.get_submodule(stage_path) if stage_path else model
        names = [path.rpartition(".")[2] for path in blocks]
        for position in sorted(range(count), reverse=True):
            if position not in keep and blocks[position] in residual:
                del stage._modules[names[position]]
    return found


def _output_layer(model: nn.Module) -> nn.Module:
    return [module for module in model.modules() if isinstance(module, _WEIGHTED)][-1]


def _attention_inputs(model: nn.Module) -> list[nn.Module]:
    """The fused query-key-value projections of attention modules (timm's ``qkv``), which keep their width.

    Such a module reshapes its output to its input's width, so its heads cannot narrow alone.
    """
    return [
        module.qkv
        for module in model.modules()
        if isinstance(getattr(module, "qkv", None), nn.Linear) and isinstance(getattr(module, "num_heads", None), int)
    ]


# CPU seconds Torch-Pruning may take to narrow a student (as structured pruning's budget)
NARROW_BUDGET_SECONDS = 30.0


def narrow_channels(model: nn.Module, width: float, example: torch.Tensor) -> None:
    """Prune ``1 − width`` of the channels of every layer but the output layer and attention, in place."""
    tp = optional_import("torch_pruning", "shrink (narrower convolutional students)")
    heads = {module: module.num_heads for module in model.modules() if isinstance(module, nn.MultiheadAttention)}
    try:
        with warnings.catch_warnings(), CpuBudget(NARROW_BUDGET_SECONDS).spending():
            # layer scales ((C,) or (C, 1, 1), as in ConvNeXt) are sliced along their channels, which is what is wanted
            warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
            pruner = tp.pruner.MetaPruner(
                model,
                example,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                pruning_ratio=1 - width,
                ignored_layers=[_output_layer(model), *_attention_inputs(model)],
                num_heads=heads,
                output_transform=output_tensor,
            )
            pruner.step()
    except BudgetSpent:
        raise ModelError(
            f"shrink: cannot narrow {type(model).__name__}: Torch-Pruning's dependency analysis ran past "
            f"{NARROW_BUDGET_SECONDS:g} s of CPU time (reshapes that fold positions into channels make it follow "
            "every position); use width=1.0 to leave out blocks only, or build the student yourself"
        ) from None
    except Exception as error:  # Torch-Pruning's own errors (IndexError, RuntimeError) on graphs it cannot follow
        raise ModelError(
            f"shrink: cannot narrow {type(model).__name__}: Torch-Pruning cannot follow its graph "
            f"({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''}); "
            "use width=1.0 to leave out blocks only, or build the student yourself and pass it to distill()"
        ) from None


def shrink_cnn(model: nn.Module, width: float, depth: float | int | None, example: torch.Tensor | None) -> nn.Module:
    """A copy of ``model`` with fewer residual blocks per stage and ``width`` × its channels."""
    example = (example[:1] if example is not None else default_input(model)).to(_device_of(model))
    modes = {name: module.training for name, module in model.named_modules()}  # a frozen norm stays in eval
    try:
        expected = _run(model.eval(), example).shape
    finally:
        _set_modes(model, modes)
    student = copy.deepcopy(model).eval()
    if depth is not None and not drop_blocks(student, depth, example) and not (isinstance(depth, float) and depth == 1):
        raise ModelError(
            f"shrink.depth: {type(model).__name__} has no residual block whose output has its input's shape, "
            "so none can be left out; leave depth unset to narrow it only"
        )
    if width < 1:
        narrow_channels(student, width, example)
    try:
        shape = _run(student, example).shape
    except Exception as error:  # noqa: BLE001  the student must run: a failure names the family
        raise ModelError(
            f"shrink: the student of {type(model).__name__} does not run ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:160] if str(error) else ''}); build the student yourself"
        ) from None
    if shape != expected:
        raise ModelError(
            f"shrink: the student of {type(model).__name__} gives outputs of shape {tuple(shape)}, "
            f"the teacher {tuple(expected)}; build the student yourself and pass it to distill()"
        )
    _set_modes(student, modes)
    return student


def _set_modes(model: nn.Module, modes: dict[str, bool]) -> None:
    for name, module in model.named_modules():
        module.training = modes.get(name, modes[""])
