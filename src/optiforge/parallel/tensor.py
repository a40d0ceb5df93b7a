"""Tensor parallel: each Linear pair split across processes with DTensor ``parallelize_module``.

In an MLP ``Linear → activation → Linear`` the first layer is split by output
columns and the second by input rows (Megatron-LM, https://arxiv.org/abs/1909.08053):
the activation works on local columns, and a single all-reduce after the second
layer rebuilds the full output. Attention blocks follow the same rule (query,
key and value projections column-wise, the output projection row-wise), found
by their usual names or given in ``parallel.tensor.plan``. Every process sees the
same batches. The parameters become DTensors, so checkpoints and the final
model go the same way as FSDP's (:mod:`optiforge.parallel.dtensor_state`).
"""

from __future__ import annotations

import torch
from torch import nn

from optiforge.config import ParallelConfig
from optiforge.errors import ConfigError, ModelError
from optiforge.parallel.dtensor_state import meta_copy
from optiforge.parallel.process_group import device_type
from optiforge.parallel.sharded import FullyShardedBase, hybrid_mesh_shape, shard_blocks

# Modules that act element by element, so column-split activations can pass through them.
_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.Sigmoid, nn.LeakyReLU, nn.Dropout, nn.Identity)
# Attention projections by their usual names: (column-wise inputs, row-wise output).
_ATTENTION_NAMES = ((("q_proj", "k_proj", "v_proj"), ("out_proj", "o_proj")), (("query", "key", "value"), ("out",)))


def _attention_pairs(prefix: str, module: nn.Module) -> dict[str, str]:
    children = dict(module.named_children())
    dot = f"{prefix}." if prefix else ""
    for inputs, outputs in _ATTENTION_NAMES:
        output = next((name for name in outputs if isinstance(children.get(name), nn.Linear)), None)
        if output and all(isinstance(children.get(name), nn.Linear) for name in inputs):
            # Whole heads per process: the block must infer its local head count from the width it gets.
            return {**{dot + name: "colwise" for name in inputs}, dot + output: "rowwise"}
    return {}


def linear_pairs(model: nn.Module) -> dict[str, str]:
    """A plan ``{module name: 'colwise' | 'rowwise'}`` for every Linear → elementwise… → Linear run,
    and for attention blocks whose projections carry the usual names (q_proj/k_proj/v_proj/out_proj)."""
    plan: dict[str, str] = {}
    for prefix, container in model.named_modules():
        plan.update(_attention_pairs(prefix, container))
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container.named_children())
        index = 0
        while index < len(children):
            name, module = children[index]
            if isinstance(module, nn.Linear):
                follow = index + 1
                while follow < len(children) and isinstance(children[follow][1], _ELEMENTWISE):
                    follow += 1
                if follow < len(children) and isinstance(children[follow][1], nn.Linear):
                    dot = f"{prefix}." if prefix else ""
                    plan[dot + name], plan[dot + children[follow][0]] = "colwise", "rowwise"
                    index = follow + 1
                    continue
            index += 1
    return plan


def tensor_plan(model: nn.Module, config: ParallelConfig, degree: int) -> dict[str, str]:
    """The plan to apply (the recipe's, or the automatic one), checked against the model."""
    plan = dict(config.tensor.plan) or linear_pairs(model)
    if not plan:
        raise ModelError(
            "parallel.strategy 'tensor': the model has no Linear → activation → Linear pair to split; "
            "give parallel.tensor.plan {module name: colwise|rowwise}, or use 'ddp' or 'fsdp'"
        )
    modules = dict(model.named_modules())
    for name, style in plan.items():
        module = modules.get(name)
        if not isinstance(module, nn.Linear):
            raise ConfigError(f"parallel.tensor.plan: '{name}' is not a Linear layer of the model")
        width = module.out_features if style == "colwise" else module.in_features
        if width % degree:
            raise ConfigError(
                f"parallel.tensor.plan: '{name}' ({style}) splits {width} features, not divisible by {degree} "
                f"tensor-parallel processes"
            )
    return plan


def apply_plan(model: nn.Module, plan: dict[str, str], mesh) -> nn.Module:
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    return parallelize_module(model, mesh, {name: styles[style]() for name, style in plan.items()})


class TensorParallel(FullyShardedBase):
    name = "tensor"

    def __init__(self, config: ParallelConfig) -> None:
        super().__init__(config)
        self.data_rank, self.data_world = 0, 1  # every process computes on the same batch

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh

        model = getattr(model, "_orig_mod", model)
        plan = tensor_plan(model, self.config, self.world_size)
        self._template, self._device = meta_copy(model), device
        mesh = init_device_mesh(device_type(), (self.world_size,), mesh_dim_names=("tensor",))
        return apply_plan(model, plan, mesh)


class HybridTensor(FullyShardedBase):
    """``hybrid`` with ``inner: tensor``: tensor parallel within a mesh row, FSDP across rows."""

    name = "hybrid"

    def __init__(self, config: ParallelConfig) -> None:
        super().__init__(config)
        self.rows, self.columns = hybrid_mesh_shape(config, self.world_size)
        self.data_rank, self.data_world = self.rank // self.columns, self.rows

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh

        model = getattr(model, "_orig_mod", model)
        plan = tensor_plan(model, self.config, self.columns)
        self._template, self._device = meta_copy(model), device
        mesh = init_device_mesh(device_type(), (self.rows, self.columns), mesh_dim_names=("data", "tensor"))
        self.data_group = mesh["data"].get_group()
        apply_plan(model, plan, mesh["tensor"])
        return shard_blocks(model, mesh["data"], self.config.fsdp.cpu_offload)
