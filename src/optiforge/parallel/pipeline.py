"""Pipeline (model) parallel: consecutive blocks of the model on consecutive processes.

The model is cut at top-level module boundaries, either where the recipe
names (``split_points``) or automatically so the stages hold about the same
number of parameters. Each process keeps the whole model object but runs and
updates only its stage; ``torch.distributed.pipelining`` schedules (GPipe,
1F1B) run forward and backward over ``microbatches`` slices of each batch.
On a hybrid mesh ``[rows, stages]`` each row is one pipeline with its own
share of the data, and each stage's gradients are averaged down its column.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler

from optiforge.config import ParallelConfig
from optiforge.data.loaders import EpochShuffleSampler
from optiforge.errors import ConfigError, ModelError
from optiforge.parallel.distributed import Distributed


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise ModelError(
            f"parallel.strategy 'pipeline' cuts an nn.Sequential model between its top-level modules; "
            f"this model is {type(model).__name__}. Build it as nn.Sequential, or use 'ddp' or 'fsdp'"
        )
    return list(model.named_children())


def _parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _balanced_starts(sizes: list[int], stages: int) -> list[int]:
    """Start indices (into ``sizes``) of ``stages`` contiguous groups minimising the largest group sum."""
    count = len(sizes)
    prefix = [0]
    for size in sizes:
        prefix.append(prefix[-1] + size)
    # best[s][i]: smallest possible largest sum when the first i items form s groups
    infinity = float("inf")
    best = [[infinity] * (count + 1) for _ in range(stages + 1)]
    cut = [[0] * (count + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for group in range(1, stages + 1):
        for end in range(group, count + 1):
            for start in range(group - 1, end):
                value = max(best[group - 1][start], prefix[end] - prefix[start])
                if value < best[group][end]:
                    best[group][end], cut[group][end] = value, start
    starts, end = [], count
    for group in range(stages, 0, -1):
        end = cut[group][end]
        starts.append(end)
    return sorted(starts)


def split_model(model: nn.Module, stages: int, split_points: list[str] = ()) -> list[list[str]]:
    """Names of the top-level modules in each stage; raises when a stage would be empty."""
    blocks = _blocks(model)
    names = [name for name, _ in blocks]
    if stages < 2:
        raise ConfigError(
            "parallel.strategy 'pipeline' needs at least 2 processes (one per stage); use --nproc 2 or more"
        )
    if split_points:
        unknown = [point for point in split_points if point not in names]
        if unknown:
            raise ConfigError(
                f"parallel.pipeline.split_points: no top-level module named {unknown}; the model has {names}"
            )
        if len(split_points) != stages - 1:
            raise ConfigError(
                f"parallel.pipeline.split_points: {len(split_points)} split points make "
                f"{len(split_points) + 1} stages, "
                f"but there are {stages} pipeline processes; give {stages - 1} split points"
            )
        starts = [0] + [names.index(point) for point in split_points]
        if starts != sorted(set(starts)):
            raise ConfigError(
                f"parallel.pipeline.split_points: {list(split_points)} leave a stage empty; each point must come after "
                f"the previous one and after the first module ({names[0]})"
            )
    else:
        weighted = [index for index, (_, module) in enumerate(blocks) if _parameter_count(module) > 0]
        if len(weighted) < stages:
            raise ConfigError(
                f"parallel.strategy 'pipeline': the model has {len(weighted)} top-level modules with parameters, "
                f"too few for {stages} stages; use at most --nproc {max(len(weighted), 1)}"
            )
        sizes = [_parameter_count(blocks[index][1]) for index in weighted]
        # A stage begins at a module with parameters; parameter-free ones (activations) stay with the module before.
        starts = [0] + [weighted[group] for group in _balanced_starts(sizes, stages)[1:]]
    bounds = [*starts, len(names)]
    return [names[bounds[index] : bounds[index + 1]] for index in range(stages)]


class WholeBatches(Sampler[int]):
    """Another sampler's order, cut to whole batches so every step splits into equal microbatches."""

    def __init__(self, sampler: Sampler, batch_size: int) -> None:
        self.sampler = sampler
        self.usable = (len(sampler) // batch_size) * batch_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return iter(list(self.sampler)[: self.usable])

    def __len__(self) -> int:
        return self.usable


class _PipelineModule(nn.Module):
    """This process's stage; evaluation passes activations stage to stage, outputs go to every process."""

    def __init__(self, stage: nn.Module, strategy: Pipeline) -> None:
        super().__init__()
        self.stage = stage
        self._strategy = strategy

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("a pipeline stage trains through Pipeline.forward_backward, not forward()")
        strategy = self._strategy
        index, last = strategy.stage_index, strategy.stages - 1
        activations = inputs
        if index > 0:
            received = [None]
            dist.recv_object_list(received, src=strategy.stage_ranks[index - 1])
            activations = received[0].to(inputs.device)
        activations = self.stage(activations)
        if index < last:
            dist.send_object_list([activations.detach().cpu()], dst=strategy.stage_ranks[index + 1])
        outputs = [activations.detach().cpu() if index == last else None]
        dist.broadcast_object_list(outputs, src=strategy.stage_ranks[last], group=strategy.pipe_group)
        return outputs[0].to(inputs.device)


class Pipeline(Distributed):
    name = "pipeline"
    runs_own_step = True

    def __init__(self, config: ParallelConfig, rows: int = 1) -> None:
        super().__init__(config)
        self.stages = self.world_size // rows
        self.stage_index, row = self.rank % self.stages, self.rank // self.stages
        self.stage_ranks = [row * self.stages + index for index in range(self.stages)]
        # Every stage of a pipeline sees the same batches (the first needs inputs, the last targets).
        self.data_rank, self.data_world = row, rows
        self.pipe_group: dist.ProcessGroup | None = None  # None: the whole world is one pipeline
        if rows > 1:
            from torch.distributed.device_mesh import init_device_mesh

            from optiforge.parallel.process_group import device_type

            mesh = init_device_mesh(device_type(), (rows, self.stages), mesh_dim_names=("data", "pipe"))
            self.pipe_group, self.data_group = mesh["pipe"].get_group(), mesh["data"].get_group()
        self._batch_size = 0
        self._schedule = None
        self._stage_module: nn.Module | None = None

    def per_process_batch(self, batch_size: int) -> int:
        batch_size = super().per_process_batch(batch_size)
        microbatches = self.config.pipeline.microbatches
        if batch_size % microbatches:
            raise ConfigError(
                f"train.batch_size: each pipeline's batch of {batch_size} does not split into "
                f"parallel.pipeline.microbatches {microbatches}; use a multiple of {microbatches}"
            )
        self._batch_size = batch_size
        return batch_size

    def train_sampler(self, dataset: Dataset, seed: int) -> Sampler | None:
        order = super().train_sampler(dataset, seed) or EpochShuffleSampler(dataset, seed)
        if self._batch_size and len(order) >= self._batch_size:
            return WholeBatches(order, self._batch_size)
        return order

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        model = getattr(model, "_orig_mod", model)  # a compiled model: split the original
        groups = split_model(model, self.stages, self.config.pipeline.split_points)
        modules = dict(model.named_children())
        # The stage shares its modules (and so its parameters) with the whole model.
        self._stage_module = nn.Sequential(OrderedDict((name, modules[name]) for name in groups[self.stage_index]))
        stage = PipelineStage(self._stage_module, self.stage_index, self.stages, device, group=self.pipe_group)
        schedule_class = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[self.config.pipeline.schedule]
        self._loss_fn: Callable | None = None
        self._loss_divisor = 1.0
        self._schedule = schedule_class(stage, self.config.pipeline.microbatches, loss_fn=self._microbatch_loss)
        return _PipelineModule(self._stage_module, self)

    def _microbatch_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._loss_fn(outputs.float(), targets) / self._loss_divisor

    def forward_backward(self, model, inputs, targets, loss_fn, loss_divisor=1.0) -> torch.Tensor:
        self._loss_fn, self._loss_divisor = loss_fn, loss_divisor
        last = self.stages - 1
        losses: list[torch.Tensor] = []
        if self.stage_index == 0:
            self._schedule.step(inputs)
        elif self.stage_index == last:
            self._schedule.step(target=targets, losses=losses)
        else:
            self._schedule.step()
        # The schedule divides gradients by the number of microbatches: the mean of equal slices' mean losses.
        loss = (
            torch.stack(losses).mean().detach().float() * loss_divisor
            if losses
            else torch.zeros((), dtype=torch.float32, device=inputs.device)
        )
        if loss.device.type != ("cuda" if dist.get_backend() == "nccl" else "cpu"):
            loss = loss.cpu()
        dist.broadcast(loss, src=self.stage_ranks[last], group=self.pipe_group)
        if self.data_world > 1:
            # Pipelines on different rows saw different data: average each stage's gradients down its column.
            for parameter in self._stage_module.parameters():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad, group=self.data_group)
                    parameter.grad /= self.data_world
        return loss

    def _owned_state(self, model: nn.Module) -> dict:
        return {key: value.detach().cpu() for key, value in self._stage_module.state_dict().items()}

    def unwrap(self, model: nn.Module) -> nn.Module:
        model = getattr(model, "_orig_mod", model)
        if self._stage_module is None:
            return model
        parts: list[dict | None] = [None] * self.stages
        dist.all_gather_object(parts, self._owned_state(model), group=self.pipe_group)
        merged = {key: value for part in parts for key, value in (part or {}).items()}
        model.load_state_dict(merged)
        return model

    def checkpoint_state(self, model, optimizer, folder, tag):
        model_state = self.unwrap(model).state_dict()
        # Each process built the optimizer over the whole model but stepped only its stage: the optimizer
        # states are disjoint by parameter index, and their union is a one-process optimizer state.
        owned = {id(parameter) for parameter in self._stage_module.parameters()}
        indices = {
            index
            for index, parameter in enumerate(
                parameter for group in optimizer.param_groups for parameter in group["params"]
            )
            if id(parameter) in owned
        }
        local = optimizer.state_dict()
        mine = {index: value for index, value in local["state"].items() if index in indices}
        parts: list[dict | None] = [None] * self.stages
        dist.all_gather_object(parts, mine, group=self.pipe_group)
        state = {index: value for part in parts for index, value in (part or {}).items()}
        return model_state, {"state": state, "param_groups": local["param_groups"]}
