"""Students of Hugging Face transformers: fewer layers, a narrower feed-forward, fewer heads.

Layers are copied from the teacher, evenly spaced from the first (12 → 6 keeps
0, 2, 4, 6, 8, 10), as DistilBERT was initialised (Sanh et al. 2019,
https://arxiv.org/abs/1910.01108). With ``width`` < 1 each kept layer keeps
that share of its feed-forward neurons and attention heads, the ones whose
weights have the largest norm, with their rows and columns copied. The head
size stays, so the residual stream (``hidden_size``) narrows to the kept heads
times the head size: embeddings, norms and heads keep the channels whose token
embeddings have the largest norm. The student's ``config`` holds its new sizes,
so ``save_pretrained`` / ``from_pretrained`` rebuild it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from optiforge.errors import ModelError


@dataclass(frozen=True)
class Layout:
    """Where a family keeps its layers, and the parts of a layer that narrow.

    Paths inside a layer: ``attention`` holds the head count ``heads``;
    ``projections`` make the heads (query, key, value), ``attention_output``
    reads them; ``feed_forward_in``/``feed_forward_out`` make and read the
    feed-forward neurons, whose count the config holds as ``feed_forward_size``.
    """

    family: str
    layers: str
    attention: str
    heads: str
    projections: tuple[str, ...]
    attention_output: str
    feed_forward_in: str
    feed_forward_out: str
    feed_forward_size: str


LAYOUTS = (
    Layout(
        "BERT/RoBERTa",
        "encoder.layer",
        "attention.self",
        "num_attention_heads",
        ("attention.self.query", "attention.self.key", "attention.self.value"),
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
        "intermediate_size",
    ),
    Layout(
        "DistilBERT",
        "transformer.layer",
        "attention",
        "n_heads",
        ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
        "attention.out_lin",
        "ffn.lin1",
        "ffn.lin2",
        "hidden_dim",
    ),
    # GPT-2's c_attn makes query, key and value side by side: one projection, three blocks of heads
    Layout("GPT-2", "h", "attn", "num_heads", ("attn.c_attn",), "attn.c_proj", "mlp.c_fc", "mlp.c_proj", "n_inner"),
)
SUPPORTED = "BERT, RoBERTa, DistilBERT (transformer.layer) and GPT-2 (transformer.h)"


def _module(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def find_transformer(model: nn.Module) -> tuple[str, Layout] | None:
    """(path of the module that owns the layers, its layout) for the first known family inside ``model``."""
    for name, module in model.named_modules():
        for layout in LAYOUTS:
            layers = _module(module, layout.layers)
            if (
                isinstance(layers, nn.ModuleList)
                and len(layers) > 0
                and all(_module(layers[0], path) is not None for path in (*layout.projections, layout.feed_forward_in))
            ):
                return name, layout
    return None


def _is_gpt2_conv(layer: nn.Module) -> bool:
    """transformers' ``Conv1D``: a linear layer whose weight is stored (in, out)."""
    return type(layer).__name__ == "Conv1D" and hasattr(layer, "nf")


def _outputs_weight(layer: nn.Module) -> torch.Tensor:
    """The weight as (out, in), whatever the layer type stores."""
    return layer.weight.t() if _is_gpt2_conv(layer) else layer.weight


def _keep_outputs(layer: nn.Module, index: torch.Tensor) -> None:
    """Keep the output features ``index`` (rows of a Linear, columns of a Conv1D)."""
    with torch.no_grad():
        if _is_gpt2_conv(layer):
            layer.weight = nn.Parameter(layer.weight[:, index].clone())
            layer.nf = len(index)
        else:
            layer.weight = nn.Parameter(layer.weight[index].clone())
            layer.out_features = len(index)
        if layer.bias is not None:
            layer.bias = nn.Parameter(layer.bias[index].clone())


def _keep_inputs(layer: nn.Module, index: torch.Tensor) -> None:
    """Keep the input features ``index`` (columns of a Linear, rows of a Conv1D)."""
    with torch.no_grad():
        if _is_gpt2_conv(layer):
            layer.weight = nn.Parameter(layer.weight[index].clone())
        else:
            layer.weight = nn.Parameter(layer.weight[:, index].clone())
            layer.in_features = len(index)


def _largest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` largest scores, in their original order."""
    return scores.topk(count).indices.sort().values


def _narrow_feed_forward(layer: nn.Module, layout: Layout, width: float) -> int:
    first, second = layer.get_submodule(layout.feed_forward_in), layer.get_submodule(layout.feed_forward_out)
    made = _outputs_weight(first)  # (neurons, hidden)
    read = _outputs_weight(second)  # (hidden, neurons)
    count = max(1, round(made.shape[0] * width))
    index = _largest(made.norm(dim=1) * read.norm(dim=0), count)
    _keep_outputs(first, index)
    _keep_inputs(second, index)
    return count


def _narrow_heads(layer: nn.Module, layout: Layout, width: float) -> int:
    attention = layer.get_submodule(layout.attention)
    heads = int(getattr(attention, layout.heads))
    projections = [layer.get_submodule(path) for path in layout.projections]
    output = layer.get_submodule(layout.attention_output)
    blocks = [
        block for projection in projections for block in _outputs_weight(projection).split(output.weight.shape[0])
    ]  # query, key, value: each (hidden, hidden) whatever the projection packing
    head_size = blocks[0].shape[0] // heads
    scores = sum(block.reshape(heads, head_size, -1).norm(dim=(1, 2)) for block in blocks)
    scores = scores + _outputs_weight(output).t().reshape(heads, head_size, -1).norm(dim=(1, 2))
    count = max(1, round(heads * width))
    kept_heads = _largest(scores, count)
    rows = (kept_heads[:, None] * head_size + torch.arange(head_size)).flatten()
    hidden = blocks[0].shape[0]
    for projection in projections:
        packed = _outputs_weight(projection).shape[0] // hidden  # 3 for GPT-2's c_attn
        _keep_outputs(projection, torch.cat([rows + part * hidden for part in range(packed)]))
    _keep_inputs(output, rows)
    setattr(attention, layout.heads, count)
    for name, value in (("all_head_size", count * head_size), ("split_size", count * head_size)):
        if hasattr(attention, name):  # BERT's all_head_size, GPT-2's split_size (where c_attn's output splits)
            setattr(attention, name, value)
    return count


def _in_out(layer: nn.Module) -> tuple[int, int] | None:
    """(input features, output features) of a Linear or a transformers ``Conv1D``; None for other modules."""
    if _is_gpt2_conv(layer):
        return layer.weight.shape[0], layer.nf
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features
    return None


def _residual_channels(student: nn.Module, hidden: int, count: int) -> torch.Tensor:
    """The ``count`` residual channels whose token and position embeddings have the largest norm."""
    embeddings = [module for module in student.modules() if isinstance(module, nn.Embedding)]
    scores = sum(
        (module.weight.norm(dim=0) for module in embeddings if module.embedding_dim == hidden), torch.zeros(hidden)
    )
    return _largest(scores, count)


def _narrow_residual(student: nn.Module, layers: nn.ModuleList, layout: Layout, hidden: int, index: torch.Tensor):
    """Keep the residual channels ``index`` everywhere: the layers' reads and writes, the embeddings, norms and
    heads around them (every other dimension of size ``hidden``)."""
    inside = set()
    for layer in layers:
        for path in (*layout.projections, layout.feed_forward_in):
            _keep_inputs(layer.get_submodule(path), index)
            inside.add(layer.get_submodule(path))
        for path in (layout.attention_output, layout.feed_forward_out):
            _keep_outputs(layer.get_submodule(path), index)
            inside.add(layer.get_submodule(path))
    narrowed: dict[int, tuple[torch.Tensor, nn.Parameter]] = {}  # a tied weight (GPT-2's lm_head, wte) narrows once

    def keep_columns(module: nn.Module) -> None:
        old = module.weight
        if id(old) not in narrowed:
            columns = old[index] if _is_gpt2_conv(module) else old[:, index]
            narrowed[id(old)] = (old, nn.Parameter(columns.clone()))
        module.weight = narrowed[id(old)][1]

    with torch.no_grad():
        for module in student.modules():
            sizes = _in_out(module)
            if module in inside:
                continue
            if isinstance(module, nn.Embedding) and module.embedding_dim == hidden:
                keep_columns(module)
                module.embedding_dim = len(index)
            elif isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (hidden,):
                module.weight = nn.Parameter(module.weight[index].clone())
                if module.bias is not None:
                    module.bias = nn.Parameter(module.bias[index].clone())
                module.normalized_shape = (len(index),)
            elif sizes is not None:
                if sizes[0] == hidden:
                    keep_columns(module)
                    if not _is_gpt2_conv(module):
                        module.in_features = len(index)
                if sizes[1] == hidden:
                    _keep_outputs(module, index)
            if type(module).__module__.startswith("transformers"):
                for name in ("embed_dim", "dim"):  # GPT-2's attention and model, DistilBERT's attention
                    if getattr(module, name, None) == hidden:
                        setattr(module, name, len(index))


def _kept_indices(count: int, kept: int) -> list[int]:
    # evenly spaced, starting at the first: 12 → 6 keeps 0, 2, 4, 6, 8, 10 as DistilBERT does
    return sorted({min(count - 1, (i * count) // kept) for i in range(kept)})


def shrink_transformer(model: nn.Module, owner_path: str, layout: Layout, width: float, kept: int) -> nn.Module:
    """A copy of ``model`` with ``kept`` of its layers and ``width`` × its feed-forward neurons and heads."""
    student = copy.deepcopy(model)
    owner = student.get_submodule(owner_path) if owner_path else student
    parent_path, _, attribute = layout.layers.rpartition(".")
    parent = owner.get_submodule(parent_path) if parent_path else owner
    layers = getattr(parent, attribute)
    indices = _kept_indices(len(layers), min(kept, len(layers)))
    setattr(parent, attribute, nn.ModuleList(layers[i] for i in indices))
    if hasattr(parent, "n_layers"):  # DistilBERT's Transformer keeps its own count
        parent.n_layers = len(indices)
    config = getattr(owner, "config", None)
    layers = getattr(parent, attribute)
    hidden = _outputs_weight(layers[0].get_submodule(layout.attention_output)).shape[0]
    head_size = _outputs_weight(layers[0].get_submodule(layout.attention_output)).shape[1] // int(
        getattr(layers[0].get_submodule(layout.attention), layout.heads)
    )
    feed_forward = heads = None
    for position, layer in enumerate(layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):  # caches are indexed by position
                module.layer_idx = position
        if width < 1:
            feed_forward = _narrow_feed_forward(layer, layout, width)
            heads = _narrow_heads(layer, layout, width)
    if heads is not None:
        # transformers derives the head size from hidden_size / heads: fewer heads of the same size narrow the stream
        _narrow_residual(student, layers, layout, hidden, _residual_channels(student, hidden, heads * head_size))
    if config is not None:
        config.num_hidden_layers = len(indices)
        if heads is not None:
            setattr(config, layout.feed_forward_size, feed_forward)
            config.num_attention_heads = heads
            config.hidden_size = heads * head_size
    return student


def refuse_transformer(model: nn.Module) -> None:
    """A transformers model of another family is refused by name, with the families that are supported."""
    config = getattr(model, "config", None)
    for module in model.modules():
        config = config or getattr(module, "config", None)
    if config is not None and hasattr(config, "model_type"):
        raise ModelError(
            f"shrink: no student builder for the transformers model {type(model).__name__} "
            f"(model_type '{config.model_type}'); supported transformers: {SUPPORTED}. "
            "Build the student yourself and pass it to distill()"
        )
