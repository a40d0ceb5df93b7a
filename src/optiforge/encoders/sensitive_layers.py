"""Which Linear layers of an encoder's graph lose the most fidelity when quantized, for ``float_most_sensitive``.

Each layer is measured alone: the finished float graph is quantized with every other layer float, run on
the evaluation sentences and compared with the float encoder's embeddings
(:func:`optiforge.quantization.sensitivity.layer_sensitivity`, the one implementation every verb uses).
Only layers with a matrix node of their own in the graph are ranked (ONNX Runtime's fused ``Attention``
holds query, key and value together; ``remove_padding`` makes them one ``qkv`` matrix). The ranking is
taken on the smoothed graph, so a layer it keeps float stays smoothed (exact in float32, one ``Mul``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from optiforge.layers import module_of_node


def graph_layers(onnx_path: Path, layers: Sequence[str], matrix_ops: Sequence[str]) -> list[str]:
    """Those of ``layers`` with a matrix-product node in the graph (their own or a wrapper's), in graph order."""
    import onnx

    from optiforge.encoders.optimize import owning_layer

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    owners = (owning_layer(module_of_node(node.name), layers) for node in graph.node if node.op_type in matrix_ops)
    return [layer for layer in dict.fromkeys(owners) if layer is not None]


def rank_layers(
    encoder: nn.Module,
    layers: list[str],
    kept_float: list[str],
    build: Callable[[list[str], Path], nn.Module],
    evaluation: Sequence[torch.Tensor],
    folder: Path,
    rankings: dict | None,
) -> list[dict]:
    """Sensitivity rows of ``layers``, most sensitive first; ``build(float_layers, path)`` makes a quantized
    encoder at ``path``. Read from ``rankings`` when an earlier call on the same graph computed them."""
    from optiforge.quantization.fidelity import Fidelity, compare, float_outputs
    from optiforge.quantization.sensitivity import cached_sensitivity

    reference = float_outputs(encoder, evaluation)
    paths = (folder / f"ranking-{index}.onnx" for index in itertools.count())

    def evaluate(model: nn.Module) -> Fidelity:
        try:
            return compare(model, list(evaluation), reference)
        finally:
            model.path.unlink(missing_ok=True)  # one graph per layer: none is kept

    return cached_sensitivity(
        rankings, "layers", lambda float_layers: build(float_layers, next(paths)), evaluate, layers, kept_float
    )
