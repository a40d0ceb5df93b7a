"""The weight tensors magnitude pruning and weight sharing cover, each once, and those they leave alone.

Covered: the ``weight`` of Linear and Conv layers (``optiforge.layers.WEIGHTED_TYPES``), of
``nn.Embedding`` and of Hugging Face's ``Conv1D`` (GPT-2); the ``weight_ih_l*``/``weight_hh_l*``
matrices of ``nn.RNN``/``nn.GRU``/``nn.LSTM``; the input projections of ``nn.MultiheadAttention``
(its ``out_proj`` is a Linear and covered as one). A tensor tied to several layers (GPT-2's
``lm_head`` and ``wte``) is one entry, named after its first layer. Any other parameter of two or
more dimensions (a raw ``nn.Parameter``: position embeddings, class tokens) is left alone and named.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from optiforge.layers import WEIGHTED_TYPES, LayerFilter

_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def _is_conv1d(module: nn.Module) -> bool:
    """Hugging Face's ``transformers.pytorch_utils.Conv1D``, recognised without importing transformers."""
    kind = type(module)
    return kind.__name__ == "Conv1D" and kind.__module__.startswith("transformers")


def covered_parameters(module: nn.Module) -> list[str]:
    """Names of ``module``'s own weight tensors that the verbs cover."""
    if isinstance(module, WEIGHTED_TYPES + (nn.Embedding,)) or _is_conv1d(module):
        return ["weight"] if getattr(module, "weight", None) is not None else []
    if isinstance(module, nn.RNNBase):
        return [name for name, _ in module.named_parameters(recurse=False) if name.startswith("weight_")]
    if isinstance(module, nn.MultiheadAttention):
        return [name for name in _ATTENTION_WEIGHTS if getattr(module, name, None) is not None]
    return []


def covered_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name → module of every layer holding a covered weight, in model order."""
    return {name: module for name, module in model.named_modules() if name and covered_parameters(module)}


def layer_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    """The classes of the model's layers that hold covered weights (for :meth:`LayerFilter.select`)."""
    return tuple(dict.fromkeys(type(module) for module in covered_layers(model).values()))


@dataclass
class Weights:
    """The tensors a verb works on (name → parameter), the layers they belong to, and what was left alone."""

    tensors: dict[str, nn.Parameter]
    layers: list[str]
    skipped: dict[str, str]


def choose_weights(model: nn.Module, layers: LayerFilter, field: str = "layers") -> Weights:
    """The covered tensors of the layers ``layers`` chooses, tied ones once; the rest named with why."""
    candidates = covered_layers(model)
    chosen = layers.select(model, layer_types(model), field, require=False) if candidates else {}
    owners: dict[int, list[str]] = {}
    for name, module in candidates.items():
        for parameter_name in covered_parameters(module):
            owners.setdefault(id(getattr(module, parameter_name)), []).append(f"{name}.{parameter_name}")
    tensors: dict[str, nn.Parameter] = {}
    used: list[str] = []
    skipped: dict[str, str] = {}
    seen: set[int] = set()
    for name, module in candidates.items():
        for parameter_name in covered_parameters(module):
            parameter = getattr(module, parameter_name)
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            aliases = owners[id(parameter)]
            left_out = [alias for alias in aliases if alias.rpartition(".")[0] not in chosen]
            if name not in chosen:
                skipped.setdefault(name, "left out by the layers filter")
            elif left_out:
                skipped.setdefault(name, f"tied to {', '.join(left_out)}, which the layers filter leaves alone")
            else:
                tensors[f"{name}.{parameter_name}"] = parameter
                for alias in aliases:  # a layer sharing the tensor is compressed with it
                    if alias.rpartition(".")[0] not in used:
                        used.append(alias.rpartition(".")[0])
    for name, module in model.named_modules():
        if candidates.get(name) is module:
            continue
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if parameter.dim() >= 2 and id(parameter) not in seen and parameter_name not in covered_parameters(module):
                seen.add(id(parameter))
                full = f"{name}.{parameter_name}" if name else parameter_name
                skipped[full] = f"a raw parameter of {type(module).__name__}, not a layer weight"
    return Weights(tensors, used, skipped)


def all_weights(model: nn.Module) -> list[nn.Parameter]:
    """Every covered weight tensor of the model, tied ones once."""
    seen: dict[int, nn.Parameter] = {}
    for module in covered_layers(model).values():
        for parameter_name in covered_parameters(module):
            parameter = getattr(module, parameter_name)
            seen.setdefault(id(parameter), parameter)
    return list(seen.values())
