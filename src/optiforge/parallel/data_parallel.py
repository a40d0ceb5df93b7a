"""Data parallel: a full model replica per process, gradients averaged by DistributedDataParallel.

Each process takes ``batch_size / world_size`` samples per step, so the
global batch is the recipe's ``train.batch_size`` whatever the world size;
the learning rate therefore needs no rescaling. ``parallel.ddp`` sets DDP's
gradient bucket size, whether gradients are views into the buckets, and the
static-graph promise. With gradient accumulation the all-reduce runs only on a
step's last backward pass (:meth:`DataParallel.synchronizing`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from optiforge.parallel.distributed import Distributed


class _DataParallelModule(DistributedDataParallel):
    """DDP that evaluates on the local replica.

    In eval mode DDP would still broadcast buffers at every forward, which
    hangs when processes hold different numbers of evaluation batches; the
    replicas are identical, so the local module gives the same outputs.
    """

    synchronized_once = False  # whether a backward has all-reduced yet

    def forward(self, *args, **kwargs):
        if not self.training:
            return self.module(*args, **kwargs)
        return super().forward(*args, **kwargs)


class DataParallel(Distributed):
    name = "ddp"

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        device_ids = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else None
        )
        options = self.config.ddp
        return _DataParallelModule(
            model,
            device_ids=device_ids,
            bucket_cap_mb=options.bucket_cap_mb,
            gradient_as_bucket_view=options.gradient_as_bucket_view,
            static_graph=options.static_graph,
        )

    def synchronizing(self, model: nn.Module, synchronize: bool) -> contextlib.AbstractContextManager:
        if not isinstance(model, _DataParallelModule):
            return contextlib.nullcontext()
        # With static_graph, DDP records the graph on the first backward and fails an internal assert if that one
        # skips the all-reduce (PyTorch 2.13). An extra all-reduce mid-step keeps the sum: every replica then adds
        # the same average.
        if synchronize or (model.static_graph and not model.synchronized_once):
            model.synchronized_once = True
            return contextlib.nullcontext()
        return model.no_sync()

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, DistributedDataParallel) else model
