"""Structured pruning: whole channels, neurons and attention heads, removed for real.

Torch-Pruning's dependency graph finds which layers must shrink together
(BatchNorm after a conv, both sides of a residual add, a flatten before a
linear layer), so the result is a smaller dense ``nn.Module`` with no masks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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


def _check_runs(model: nn.Module, example_inputs: Any) -> None:
    """Run the pruned model once; a failure names the layer it happened in."""
    current: list[str] = []
    hooks = [
        module.register_forward_pre_hook(lambda _m, _i, name=name: current.append(name))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            if isinstance(example_inputs, dict):
                model(**example_inputs)
            elif isinstance(example_inputs, tuple):
                model(*example_inputs)
            else:
                model(example_inputs)
    except Exception as error:
        where = current[-1] if current else type(model).__name__
        raise ModelError(
            f"structured pruning broke layer '{where}' ({type(error).__name__}: "
            f"{str(error).splitlines()[0]}); exclude it with layers.exclude"
        ) from None
    finally:
        for hook in hooks:
            hook.remove()


def prune_structured(
    model: nn.Module,
    config: PruneConfig,
    finetune: Trainer,
    data: TaskData | None = None,
    example_inputs: Any = None,
) -> tuple[nn.Module, list[str]]:
    """Remove the least important channels/neurons (and heads), then fine-tune. Returns (model, layers pruned)."""
    tp = _torch_pruning()
    if example_inputs is None:
        if data is None:
            raise ConfigError("structured pruning traces the model: pass data=... or example_inputs=...")
        example_inputs = data.example_input(2)
    device = next(model.parameters()).device
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = example_inputs.to(device)
    elif isinstance(example_inputs, dict):
        example_inputs = {key: value.to(device) for key, value in example_inputs.items()}
    layers = chosen_layers(model, config.layers, "structured pruning")
    heads = attention_heads(model)
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
    layer_sparsity = layer_values(model, list(layers), config.layer_sparsity, "layer_sparsity")
    ratio_dict = {layers[name]: fraction for name, fraction in layer_sparsity.items()}
    head_sparsity = config.structured.head_sparsity if config.structured.head_sparsity is not None else config.sparsity
    steps = config.structured.iterative_steps
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs,
            importance=_importance(config, tp),
            global_pruning=config.scope == "global",
            pruning_ratio=config.sparsity,
            pruning_ratio_dict=ratio_dict or None,
            iterative_steps=steps,
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
    epochs = config.finetune.epochs
    epochs_per_step = [epochs // steps + (1 if index < epochs % steps else 0) for index in range(steps)]
    for step in range(steps):
        if config.structured.importance == "taylor":
            _taylor_gradients(model, data, config.structured.taylor_batches)
        pruner.step()
        model.zero_grad(set_to_none=True)
        _fix_attention_sizes(model)
        _check_runs(model, example_inputs)
        name = f"finetune-{step + 1}" if steps > 1 else "finetune"
        model = finetune(model, name=name, epochs=epochs_per_step[step])
    return model, list(layers)
