"""Worker script for the equivalence tests: run under torch.distributed.run with 2 processes.

Trains the same tiny model with DDP, FSDP and tensor parallel and runs one
pipeline step (GPipe and 1F1B); rank 0 saves what the test compares with a
single-process reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from parallel_models import SelfAttention
from torch import nn
from torch.utils.data import TensorDataset

import optiforge
from optiforge.data.builtin import TaskData
from optiforge.parallel.data_parallel import DataParallel
from optiforge.parallel.pipeline import Pipeline
from optiforge.parallel.process_group import init_process_group
from optiforge.parallel.sharded import FullyShardedDataParallel
from optiforge.parallel.tensor import TensorParallel

GLOBAL_BATCH = 32


def tiny_data() -> TaskData:
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(576, 16, generator=generator)
    labels = (inputs[:, :4].argmax(dim=1)).long()
    train = TensorDataset(inputs[:512], labels[:512])
    val = TensorDataset(inputs[512:], labels[512:])
    return TaskData(train, val, val, (16,), 4, name="tiny")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def train_config(epochs: int = 2) -> optiforge.TrainConfig:
    return optiforge.TrainConfig(
        epochs=epochs,
        batch_size=GLOBAL_BATCH,
        seed=3,
        optimizer=optiforge.OptimizerConfig(name="sgd", lr=0.2, momentum=0.9),
    )


def trained(strategy) -> dict:
    result = optiforge.train(tiny_model(), tiny_data(), train_config(), strategy=strategy, progress=False)
    return {"weights": result.model.state_dict(), "history": result.history}


def pipeline_step(schedule: str) -> dict:
    config = optiforge.ParallelConfig(strategy="pipeline", pipeline={"microbatches": 4, "schedule": schedule})
    strategy = Pipeline(config)
    model = tiny_model()
    wrapped = strategy.wrap(model, torch.device("cpu"))
    inputs, targets = tiny_data().train.tensors
    inputs, targets = inputs[:GLOBAL_BATCH], targets[:GLOBAL_BATCH]
    wrapped.train()
    loss = strategy.forward_backward(wrapped, inputs, targets, nn.functional.cross_entropy)
    grads = {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, grads)
    wrapped.eval()
    outputs = wrapped(inputs)
    return {"loss": loss.item(), "grads": {k: v for part in parts for k, v in part.items()}, "outputs": outputs}


def attention_step() -> dict:
    """Forward and backward of a tensor-parallel attention block (heads split over the processes)."""
    from torch.distributed.device_mesh import init_device_mesh

    from optiforge.parallel.tensor import apply_plan, linear_pairs

    torch.manual_seed(0)
    block = SelfAttention()
    plan = linear_pairs(block)
    apply_plan(block, plan, init_device_mesh("cpu", (dist.get_world_size(),)))
    tokens = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    outputs = block(tokens)  # may be an AsyncCollectiveTensor: a tensor whose all-reduce finishes on first use
    outputs.square().sum().backward()
    grads = {name: parameter.grad.full_tensor() for name, parameter in block.named_parameters()}
    return {"plan": plan, "outputs": outputs.detach(), "grads": grads}


def hybrid_results() -> dict:
    """The three 2 x 2 meshes: data parallel x (sharding, tensor slices, pipeline stages)."""
    from optiforge.parallel.sharded import HybridSharded
    from optiforge.parallel.tensor import HybridTensor

    def config(inner: str) -> optiforge.ParallelConfig:
        return optiforge.ParallelConfig(
            strategy="hybrid", hybrid={"mesh": [2, 2], "inner": inner}, pipeline={"microbatches": 4}
        )

    return {
        "shard": trained(HybridSharded(config("shard"))),
        "tensor": trained(HybridTensor(config("tensor"))),
        "pipeline": trained(Pipeline(config("pipeline"), rows=2)),
    }


def two_process_results() -> dict:
    return {
        "attention": attention_step(),
        "ddp": trained(DataParallel(optiforge.ParallelConfig(strategy="ddp"))),
        "fsdp": trained(FullyShardedDataParallel(optiforge.ParallelConfig(strategy="fsdp"))),
        "tensor": trained(TensorParallel(optiforge.ParallelConfig(strategy="tensor"))),
        "gpipe": pipeline_step("gpipe"),
        "1f1b": pipeline_step("1f1b"),
    }


def main(out: Path) -> None:
    init_process_group()
    if dist.get_world_size() == 4:
        results = hybrid_results()
        if dist.get_rank() == 0:
            torch.save(results, out)
        return
    results = two_process_results()
    if dist.get_rank() == 0:
        torch.save(results, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
