"""``measure``: task metric, parameters, bytes on disk, latency, throughput, memory.

Latency is wall-clock at batch 1 after warm-up (median and p95 over repeats);
throughput is samples per second at a large batch. Figures are taken by the
same code after every stage so they compare, and of the model in the form it
ships (:mod:`optiforge.bench.deployment`): under ``hardware.precision``'s
autocast, compiled when ``hardware.compile`` says so (compile time reported
apart, in ``compile_seconds``), int8/ONNX artefacts as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from optiforge.bench import timing
from optiforge.bench.deployment import artifact_parameters, deploy
from optiforge.bench.memory import peak_forward_bytes
from optiforge.config import HardwareConfig, MeasureConfig
from optiforge.data.builtin import TaskData
from optiforge.data.loaders import make_loader
from optiforge.exporters.onnx import OnnxModule
from optiforge.exporters.openvino import OpenVinoModule
from optiforge.files import artifact_size_bytes
from optiforge.tasks import Task, task_for

EVALUATION_BATCH = 512
# modules whose runtime allocates its own memory: PyTorch's peak says nothing about them
FOREIGN_RUNTIMES: tuple[type, ...] = (OnnxModule, OpenVinoModule)


@dataclass
class Measurement:
    """One row of the report (see the report.json contract in the README)."""

    metric: str
    value: float | None
    params: int
    nonzero_params: int
    size_bytes: int | None
    latency_ms: dict
    throughput_per_s: float
    peak_memory_bytes: int | None
    metrics: dict = field(default_factory=dict)
    deployment: dict = field(default_factory=dict)  # engine, precision, compiled, threads (see bench.deployment)
    compile_seconds: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.inference_mode()
def measure(
    model: nn.Module | Callable,
    data: TaskData,
    *,
    artifact: str | Path | None = None,
    config: MeasureConfig = MeasureConfig(),
    task: Task | None = None,
    device: torch.device | None = None,
    hardware: HardwareConfig | None = None,
) -> Measurement:
    """Measure a model on the test split, in the form ``hardware`` deploys it.

    ``model`` may be any callable taking a batch of inputs; an
    :class:`~optiforge.exporters.onnx.OnnxModule` counts its ONNX initializers
    as parameters, an :class:`~optiforge.exporters.openvino.OpenVinoModule` its IR's weight constants,
    another callable counts 0. ``hardware.precision`` (bf16,
    fp16) runs a float32 model under autocast; ``hardware.compile`` compiles it
    (inductor, frozen weights, dynamic batch) and reports the compile time in
    ``compile_seconds``, apart from the timed calls.

    >>> import optiforge
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16]), data)
    >>> m = optiforge.measure(model, data, config=optiforge.MeasureConfig(latency_repeats=3))
    >>> m.params
    1210
    """
    task = task or task_for(data.task, model)
    if isinstance(model, nn.Module):
        device = device or _device_of(model)
        model.eval()
    else:
        device = device or torch.device("cpu")
    params, nonzero = artifact_parameters(model)
    single = data.example_input(1).to(device)
    batch = data.example_input(config.throughput_batch).to(device)
    # every batch size measured below, so that compiling (once per size for a graph specialised per size) is
    # timed as compile_seconds and never inside the figures
    evaluated = [min(EVALUATION_BATCH, len(data.test)), len(data.test) % EVALUATION_BATCH]
    examples = [batch, single] + [data.example_input(size).to(device) for size in evaluated if size > 1]
    deployed = deploy(model, hardware, device, examples)
    foreign, model = isinstance(model, FOREIGN_RUNTIMES), deployed.model
    metrics = (
        task.evaluate(model, make_loader(data.test, EVALUATION_BATCH), device)
        if isinstance(model, nn.Module)
        else _evaluate_callable(model, data, task)
    )
    latency = timing.timed(lambda: model(single), config.latency_repeats, config.warmup, device)
    batch_times = timing.timed(lambda: model(batch), config.throughput_repeats, max(1, config.warmup // 2), device)
    size = artifact_size_bytes(artifact) if artifact is not None and Path(artifact).is_file() else None
    return Measurement(
        metric=task.primary_metric,
        value=metrics.get(task.primary_metric),
        params=params,
        nonzero_params=nonzero,
        size_bytes=size,
        latency_ms={"batch": 1, **timing.latency_ms(latency)},
        throughput_per_s=timing.per_second(config.throughput_batch, batch_times),
        peak_memory_bytes=None if foreign else peak_forward_bytes(lambda: model(batch), device),
        metrics=metrics,
        deployment=deployed.form.as_dict(),
        compile_seconds=deployed.compile_seconds,
    )


def _evaluate_callable(model: Callable, data: TaskData, task: Task) -> dict[str, float]:
    sums: dict[str, float] = {}
    for inputs, targets in make_loader(data.test, EVALUATION_BATCH):
        outputs = torch.as_tensor(model(inputs))
        for key, value in task.batch_sums(outputs.float(), targets).items():
            sums[key] = sums.get(key, 0.0) + value
    return task.finalize(sums)
