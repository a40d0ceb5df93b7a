"""Fully sharded data parallel (FSDP2, ``fully_shard``) and its hybrid form (HSDP).

Every block with parameters (each top-level child module) is sharded on its
own, then the root: a block's full weights exist only while it computes, so
peak memory is about one block plus the shards. ``cpu_offload`` keeps the
shards and the optimizer state in host memory. On a 2-D mesh
``[replicas, shards]`` parameters are sharded inside a row and replicated
across rows (HSDP): sharding traffic stays within a node, gradients are
averaged across nodes. With gradient accumulation the gradients are reduced
(reduce-scatter, and HSDP's all-reduce) only on an optimizer step's last
backward pass; the others accumulate full gradients locally, as DDP's
``no_sync`` does (:meth:`FullyShardedBase.synchronizing`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from optiforge.config import ParallelConfig
from optiforge.errors import ConfigError
from optiforge.parallel.distributed import Distributed
from optiforge.parallel.dtensor_state import gather_full, load_sharded, meta_copy, save_sharded
from optiforge.parallel.process_group import device_type


def shard_blocks(model: nn.Module, mesh, cpu_offload: bool = False) -> nn.Module:
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    # pin_memory needs CUDA; on a CPU-only build the offload policy still keeps everything on the host.
    policy = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cpu_offload else OffloadPolicy()
    for child in model.children():
        if any(parameter.requires_grad for parameter in child.parameters()):
            fully_shard(child, mesh=mesh, offload_policy=policy)
    fully_shard(model, mesh=mesh, offload_policy=policy)
    return model


@contextlib.contextmanager
def _without_gradient_sync(model) -> Iterator[None]:
    """FSDP2's ``no_sync``: unsharded gradients accumulate locally until a backward with the sync back on."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


class FullyShardedBase(Distributed):
    """Shared by FSDP and HSDP: DTensor checkpoints and gathering the full model."""

    _template: nn.Module | None = None

    def mesh(self):
        raise NotImplementedError

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        model = getattr(model, "_orig_mod", model)
        if not any(True for _ in model.parameters()):
            raise ConfigError(f"parallel.strategy '{self.name}': the model has no parameters to shard")
        self._template, self._device = meta_copy(model), device
        return shard_blocks(model, self.mesh(), self.config.fsdp.cpu_offload)

    def synchronizing(self, model: nn.Module, synchronize: bool) -> contextlib.AbstractContextManager:
        from torch.distributed.fsdp import FSDPModule

        if synchronize or not isinstance(model, FSDPModule):
            return contextlib.nullcontext()
        return _without_gradient_sync(model)

    def unwrap(self, model: nn.Module) -> nn.Module:
        model = getattr(model, "_orig_mod", model)
        if self._template is None:
            return model
        return gather_full(model, self._template).to(self._device)

    def checkpoint_state(self, model, optimizer, folder, tag):
        return save_sharded(model, optimizer, folder, tag), None

    def load_checkpoint_state(self, model, optimizer, model_state, optimizer_state, folder) -> None:
        load_sharded(model, optimizer, model_state, folder)


class FullyShardedDataParallel(FullyShardedBase):
    name = "fsdp"

    def mesh(self):
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(device_type(), (self.world_size,), mesh_dim_names=("shard",))


def hybrid_mesh_shape(config: ParallelConfig, world_size: int) -> tuple[int, int]:
    """The ``[data, inner]`` mesh; by default two rows when the world splits evenly."""
    mesh = config.hybrid.mesh
    if mesh:
        if len(mesh) != 2:
            raise ConfigError(
                f"parallel.hybrid.mesh: a hybrid mesh has two sizes [data, {config.hybrid.inner}], got {mesh}"
            )
        rows, columns = mesh
        if rows * columns != world_size:
            raise ConfigError(
                f"parallel.hybrid.mesh: {mesh} needs {rows * columns} processes, but {world_size} were started; "
                f"use --nproc {rows * columns}"
            )
        return rows, columns
    if world_size < 4 or world_size % 2:
        raise ConfigError(
            f"parallel.strategy 'hybrid' needs a 2-D mesh of at least 2 x 2 processes, got {world_size}; "
            "use --nproc 4 or give parallel.hybrid.mesh"
        )
    return 2, world_size // 2


class HybridSharded(FullyShardedBase):
    """``hybrid`` with ``inner: shard``: replicate across mesh rows, shard within each row."""

    name = "hybrid"

    def __init__(self, config: ParallelConfig) -> None:
        super().__init__(config)
        self.rows, self.columns = hybrid_mesh_shape(config, self.world_size)

    def mesh(self):
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(device_type(), (self.rows, self.columns), mesh_dim_names=("replicate", "shard"))
