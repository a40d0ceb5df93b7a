"""Structured pruning: whole channels, neurons and attention heads, removed for real.

Torch-Pruning's dependency graph finds which layers must shrink together
(BatchNorm after a conv, both sides of a residual add, a flatten before a
linear layer), so the result is a smaller dense ``nn.Module`` with no masks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from optiforge.bench.budget import BudgetSpent, CpuBudget
from optiforge.compress.checks import Snapshot, failing_layer, to_device
from optiforge.compress.common import Trainer, chosen_layers, layer_values
from optiforge.compress.config import PruneConfig
from optiforge.data.builtin import TaskData
from optiforge.data.loaders import make_loader
from optiforge.errors import ConfigError, DependencyError, ModelError
from optiforge.layers import WEIGHTED_TYPES
from optiforge.tasks import task_for

# leaf layers whose parameters Torch-Pruning knows how to slice
_SLICEABLE = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.Embedding,
    nn.PReLU,
    nn.MultiheadAttention,
    nn.LSTM,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
)


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise DependencyError("structured pruning needs Torch-Pruning: pip install torch-pruning") from None
    return torch_pruning


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """query/key/value projections → head count, for BERT-like self-attention modules."""
    heads: dict[nn.Module, int] = {}
    for module in model.modules():
        count = getattr(module, "num_attention_heads", None)
        projections = [getattr(module, name, None) for name in ("query", "key", "value")]
        if isinstance(count, int) and all(isinstance(p, nn.Linear) for p in projections):
            for projection in projections:
                heads[projection] = count
    return heads


def _fix_attention_sizes(model: nn.Module) -> None:
    """After heads are removed, the attention module's head count must follow its projections."""
    for module in model.modules():
        query = getattr(module, "query", None)
        head_size = getattr(module, "attention_head_size", None)
        if (
            isinstance(getattr(module, "num_attention_heads", None), int)
            and isinstance(query, nn.Linear)
            and isinstance(head_size, int)
            and head_size > 0
        ):
            module.num_attention_heads = query.out_features // head_size
            module.all_head_size = query.out_features


def _output_tensor(output: Any) -> torch.Tensor:
    """A tensor to trace the graph from, whatever the model returns."""
    if isinstance(output, torch.Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden
    values = output.values() if isinstance(output, dict) else output
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    raise ModelError(f"structured pruning: the model returns {type(output).__name__}, with no tensor to trace")


def _unsupported_layer(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if list(module.children()):
            continue
        if list(module.parameters(recurse=False)) and not isinstance(module, _SLICEABLE):
            return f"'{name}' ({type(module).__name__})"
    return None


def _raw_parameters(model: nn.Module) -> str:
    """The parameters held by modules Torch-Pruning cannot slice, e.g. ``gain`` of a custom module."""
    names = [
        f"{name}.{parameter_name}" if name else parameter_name
        for name, module in model.named_modules()
        if not isinstance(module, _SLICEABLE)
        for parameter_name, _ in module.named_parameters(recurse=False)
    ]
    return ", ".join(f"'{name}'" for name in names)


def _importance(config: PruneConfig, tp: Any) -> Any:
    if config.structured.importance == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if config.structured.importance == "l1" else 2)


def _taylor_gradients(model: nn.Module, data: TaskData | None, batches: int) -> None:
    """Accumulate loss gradients on a few training batches (first-order Taylor scores)."""
    if data is None:
        raise ConfigError("structured.importance 'taylor' needs data=... to compute gradients")
    task = task_for(data.task)
    device = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    model.eval()  # BatchNorm statistics must not move while scoring
    for index, (inputs, targets) in enumerate(make_loader(data.train, 64, shuffle=True, seed=0)):
        if index >= batches:
            break
        task.loss(model(inputs.to(device)).float(), targets.to(device)).backward()


class _GroupError(Exception):
    """Torch-Pruning failed while pruning the group of ``layer``."""

    def __init__(self, layer: nn.Module, error: Exception) -> None:
        super().__init__(str(error))
        self.layer = layer
        self.error = error


def _group_root(group: Any) -> nn.Module | None:
    try:
        return group[0].dep.target.module
    except (AttributeError, IndexError, TypeError):
        return None


def _step(pruner: Any) -> None:
    """One pruning step, group by group, so a failure names the group's layer."""
    for group in pruner.step(interactive=True):
        try:
            group.prune()
        except Exception as error:  # Torch-Pruning raises raw IndexError/RuntimeError on graphs it misreads
            raise _GroupError(_group_root(group), error) from None


def _layers_to_leave(model: nn.Module, name: str) -> list[nn.Module]:
    """The compressible layers to leave alone when ``name`` broke: those inside it, or inside its parent if a leaf."""
    module = model.get_submodule(name) if name else model
    if not list(module.children()) and "." in name:
        module = model.get_submodule(name.rpartition(".")[0])
    return [layer for layer in module.modules() if isinstance(layer, WEIGHTED_TYPES)]


def _make_pruner(
    tp: Any,
    model: nn.Module,
    config: PruneConfig,
    example_inputs: Any,
    layers: dict[str, nn.Module],
    ignored: list[nn.Module],
    heads: dict[nn.Module, int],
) -> Any:
    layer_sparsity = layer_values(model, list(layers), config.layer_sparsity, "layer_sparsity")
    ratio_dict = {layers[name]: fraction for name, fraction in layer_sparsity.items() if layers[name] not in ignored}
    head_sparsity = config.structured.head_sparsity if config.structured.head_sparsity is not None else config.sparsity
    try:
        return tp.pruner.MetaPruner(
            model,
            example_inputs,
            importance=_importance(config, tp),
            global_pruning=config.scope == "global",
            pruning_ratio=config.sparsity,
            pruning_ratio_dict=ratio_dict or None,
            iterative_steps=config.structured.iterative_steps,
            ignored_layers=ignored,
            round_to=config.structured.round_to,
            num_heads=heads,
            prune_num_heads=bool(heads) and config.structured.prune_heads,
            prune_head_dims=False,
            head_pruning_ratio=head_sparsity if heads and config.structured.prune_heads else 0.0,
            output_transform=_output_tensor,
        )
    except (ConfigError, ModelError):
        raise
    except Exception as error:
        layer = _unsupported_layer(model)
        hint = f"layer {layer} is not supported" if layer else f"{type(error).__name__}: {str(error).splitlines()[0]}"
        raise ModelError(
            f"structured pruning cannot follow the dependencies of {type(model).__name__}: {hint}; "
            "exclude it with layers.exclude or use method 'magnitude'"
        ) from None


# how many times a layer Torch-Pruning breaks is left alone before the model is refused
_MAX_RETRIES = 12
# CPU seconds Torch-Pruning's analysis and steps may take over all attempts of one call: a ResNet-50 takes a few,
# timm's EfficientViT would take tens of minutes per attempt
ANALYSIS_BUDGET_SECONDS = 30.0


def prune_structured(
    model: nn.Module,
    config: PruneConfig,
    finetune: Trainer,
    data: TaskData | None = None,
    example_inputs: Any = None,
) -> tuple[nn.Module, list[str], dict[str, str]]:
    """Remove the least important channels/neurons (and heads), then fine-tune.

    Returns (model, layers pruned, layers left alone → why). Where Torch-Pruning
    cannot follow the graph around a layer (the step fails, or the pruned model
    fails there), the model is rolled back, that block's layers are left alone
    and named, and the rest is pruned. If pruning fails for good, the caller's
    model is given back as it was.
    """
    tp = _torch_pruning()
    if example_inputs is None:
        if data is None:
            raise ConfigError("structured pruning traces the model: pass data=... or example_inputs=...")
        example_inputs = data.example_input(2)
    example_inputs = to_device(example_inputs, model)
    layers = chosen_layers(model, config.layers, "structured pruning")
    heads = attention_heads(model)
    names = {module: name for name, module in model.named_modules()}
    ignored = [
        module for module in model.modules() if isinstance(module, WEIGHTED_TYPES) and module not in layers.values()
    ]
    if heads:
        # the residual stream of an encoder keeps its width: only heads and feed-forward neurons shrink
        width = next(iter(heads)).in_features
        ignored += [
            module
            for module in layers.values()
            if isinstance(module, nn.Linear) and module.out_features == width and module not in heads
        ]
    left_alone: dict[str, str] = {}
    snapshot = Snapshot(model)
    budget = CpuBudget(ANALYSIS_BUDGET_SECONDS)
    for _attempt in range(_MAX_RETRIES):
        try:
            result = _prune_steps(tp, model, config, finetune, data, example_inputs, layers, ignored, heads, budget)
            break
        except BudgetSpent:
            snapshot.restore()
            raise ModelError(
                f"structured pruning cannot prune {type(model).__name__}: Torch-Pruning's dependency analysis ran past "
                f"{budget.seconds:g} s of CPU time"
                f"{f' after leaving {len(left_alone)} layers alone' if left_alone else ''} (reshapes that fold "
                "positions into channels make it follow every position); the model given was left as it was; "
                "exclude those blocks with layers.exclude or use method 'magnitude'"
            ) from None
        except _GroupError as failure:
            snapshot.restore()
            name = names.get(failure.layer, "") if failure.layer is not None else ""
            reason = f"Torch-Pruning cannot prune its group ({type(failure.error).__name__})"
        except _BrokeLayer as failure:
            snapshot.restore()
            name, reason = failure.layer, f"pruning it broke the forward pass ({failure.kind})"
        except BaseException:
            snapshot.restore()
            raise
        newly = [layer for layer in _layers_to_leave(model, name) if layer not in ignored and layer in layers.values()]
        if not name or not newly:
            raw = _raw_parameters(model)
            raise ModelError(
                f"structured pruning cannot prune {type(model).__name__}"
                f"{f': layer {name!r} breaks' if name else ''} ({reason})"
                f"{f'; raw parameters the dependency graph cannot see: {raw}' if raw and not name else ''}; "
                "the model given was left as it was; exclude the layers feeding them with layers.exclude "
                "or use method 'magnitude'"
            )
        ignored += newly
        left_alone.update(dict.fromkeys((names[layer] for layer in newly), f"left alone: {reason}"))
        model.zero_grad(set_to_none=True)
    else:
        snapshot.restore()
        raise ModelError(
            f"structured pruning gave up on {type(model).__name__} after leaving {len(left_alone)} layers alone "
            f"({', '.join(left_alone)}); the model given was left as it was; use method 'magnitude'"
        )
    pruned = [name for name, layer in layers.items() if names[layer] not in left_alone]
    if not pruned:
        raw = _raw_parameters(model)
        raise ModelError(
            f"structured pruning left every chosen layer of {type(model).__name__} alone: "
            f"{'; '.join(f'{name!r} {why}' for name, why in left_alone.items())}"
            f"{f' (raw parameters the dependency graph cannot see: {raw})' if raw else ''}; use method 'magnitude'"
        )
    return result, pruned, left_alone


class _BrokeLayer(Exception):
    def __init__(self, layer: str, kind: str) -> None:
        super().__init__(layer)
        self.layer = layer
        self.kind = kind


def _prune_steps(
    tp: Any,
    model: nn.Module,
    config: PruneConfig,
    finetune: Trainer,
    data: TaskData | None,
    example_inputs: Any,
    layers: dict[str, nn.Module],
    ignored: list[nn.Module],
    heads: dict[nn.Module, int],
    budget: CpuBudget,
) -> nn.Module:
    with budget.spending():
        pruner = _make_pruner(tp, model, config, example_inputs, layers, ignored, heads)
    steps = config.structured.iterative_steps
    epochs = config.finetune.epochs
    epochs_per_step = [epochs // steps + (1 if index < epochs % steps else 0) for index in range(steps)]
    for step in range(steps):
        if config.structured.importance == "taylor":
            _taylor_gradients(model, data, config.structured.taylor_batches)
        with budget.spending():
            _step(pruner)
        model.zero_grad(set_to_none=True)
        _fix_attention_sizes(model)
        failure = failing_layer(model, example_inputs)
        if failure is not None:
            raise _BrokeLayer(failure[0], type(failure[1]).__name__)
        name = f"finetune-{step + 1}" if steps > 1 else "finetune"
        model = finetune(model, name=name, epochs=epochs_per_step[step])
    return model
