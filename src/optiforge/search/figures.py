"""What a candidate's figures are, taken with the same code as the report's rows.

The metric, size and memory come from :func:`optiforge.bench.measure.measure` on the validation split
(the test split is kept for the final report). The speed objective is timed interleaved with the
baseline (:func:`optiforge.bench.timing.interleaved`) and reported relative to the baseline's first
timing, so a change of load on the machine between two candidates does not reorder them.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.bench import timing
from optiforge.bench.measure import measure
from optiforge.bench.memory import peak_forward_bytes
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError
from optiforge.exporters.onnx import OnnxModule
from optiforge.search.config import SearchConfig
from optiforge.tasks import Task

# objective -> (figure ranked, higher is better, how it reads)
OBJECTIVE_FIGURES: dict[str, tuple[str, bool, str]] = {
    "latency": ("latency_ms", False, "latency (ms)"),
    "throughput": ("throughput_per_s", True, "samples/s"),
    "size": ("size_bytes", False, "size on disk (bytes)"),
    "memory": ("peak_memory_bytes", False, "peak memory (bytes)"),
}
# each side's turn in a timing round lasts at least this long (a burst of calls at small batches)
ROUND_SECONDS = 0.02
PREFERENCE_FIGURES = {"smallest": ("size_bytes", False, "size on disk (bytes)")}


def validation_view(data: TaskData) -> TaskData:
    """``data`` whose test split is its validation split (the test split itself when there is none)."""
    return dataclasses.replace(data, test=data.val) if len(data.val) else data


def _device(model: Any) -> torch.device:
    if isinstance(model, nn.Module):
        for tensor in list(model.parameters()) + list(model.buffers()):
            return tensor.device
    return torch.device("cpu")


def _outputs(model: Any, inputs: torch.Tensor) -> torch.Tensor | None:
    with torch.inference_mode():
        result = model(inputs.to(_device(model)))
    return (
        torch.as_tensor(result).float().cpu()
        if isinstance(result, (torch.Tensor,)) or not isinstance(result, (dict, tuple, list))
        else None
    )


def output_cosine(reference: torch.Tensor | None, outputs: torch.Tensor | None) -> float | None:
    """Mean cosine between corresponding rows of two output batches (1.0: the same direction)."""
    if reference is None or outputs is None or reference.shape != outputs.shape:
        return None
    cosine = torch.nn.functional.cosine_similarity(reference.flatten(1), outputs.flatten(1), dim=1)
    return float(cosine.mean())


class BaseMeasurer:
    """What every measurer of a search shares: the speed timed against the baseline, and the constraint.

    A subclass says what a figure is (:meth:`figures`); the search ranks ``value`` (the metric, higher is
    better when ``higher_is_better``) and the objective's figure, and accepts by :meth:`accepted`.
    """

    def __init__(
        self,
        baseline: Any,
        config: SearchConfig,
        timing_inputs: list[Any],
        *,
        higher_is_better: bool = True,
        metric_name: str = "metric",
    ) -> None:
        self.baseline, self.config, self.timing_inputs = baseline, config, timing_inputs
        self.higher_is_better, self.metric_name = higher_is_better, metric_name
        self.reference_seconds: float | None = None
        self.baseline_figures: dict = {}

    @property
    def objective(self) -> tuple[str, bool, str]:
        """(figure ranked, higher is better, how it reads): the search's ``objective`` unless a measurer
        ranks a figure of its own (mixed precision: the layers kept float)."""
        return OBJECTIVE_FIGURES[self.config.objective]

    def figures(self, model: Any, artifact: Path | None, name: str) -> dict:
        """The candidate's figures: ``value`` (the metric) and the objective's figure at least."""
        raise NotImplementedError

    def run(self, model: Any, batch: Any) -> Callable[[], Any]:
        """A call of ``model`` on one timing batch (moved to the model's device)."""
        return functools.partial(model, batch.to(_device(model)))

    def refuse_unmeasurable(self, model: Any, name: str) -> None:
        if self.config.objective == "memory" and isinstance(model, OnnxModule):
            raise ConfigError(
                f"search.objective: memory cannot be measured for {name}: ONNX Runtime allocates its own memory, "
                "which PyTorch's peak does not see; choose latency, throughput or size, or leave onnxruntime out"
            )

    @torch.inference_mode()  # both sides as they run in use: no autograd bookkeeping
    def _speed(self, model: Any) -> tuple[float, float]:
        """(candidate seconds per batch scaled to the baseline's first timing, speedup over the baseline).

        Every timing batch is timed on both sides in turn (the task's batches: one for most tasks, the
        validation sentences in batches of varying length for encoders)."""
        runs = {}
        for index, batch in enumerate(self.timing_inputs):
            runs[f"baseline/{index}"] = self.run(self.baseline, batch)
            runs[f"candidate/{index}"] = self.run(model, batch)
        times = timing.interleaved(
            runs, rounds=self.config.timing.rounds, warmup=1, device=_device(model), min_round_seconds=ROUND_SECONDS
        )
        count = len(self.timing_inputs)
        base = sum(statistics.median(times[f"baseline/{index}"]) for index in range(count)) / count
        mine = sum(statistics.median(times[f"candidate/{index}"]) for index in range(count)) / count
        if self.reference_seconds is None:
            self.reference_seconds = base
        return self.reference_seconds * mine / base, base / mine

    def speed_figures(self, model: Any) -> dict:
        """``latency_ms``, ``throughput_per_s`` and ``speedup`` at the search's timing batch."""
        seconds, speedup = self._speed(model)
        batch = self.config.timing_batch
        return {"batch": batch, "latency_ms": seconds * 1000.0, "throughput_per_s": batch / seconds, "speedup": speedup}

    def metric_drop(self, value: float | None) -> float | None:
        base = self.baseline_figures.get("value")
        if value is None or base is None:
            return None
        return base - value if self.higher_is_better else value - base

    def accepted(self, figures: dict) -> bool:
        """Whether ``figures`` meet the constraint."""
        drop = self.metric_drop(figures.get("value"))
        if self.config.constraint.max_metric_drop is not None and (
            drop is None or drop > self.config.constraint.max_metric_drop + 1e-12
        ):
            return False
        floors = (
            ("fidelity", self.config.constraint.min_fidelity),
            ("neighbours_kept", self.config.constraint.min_neighbours_kept),
        )
        for figure, floor in floors:
            if floor is not None and (figures.get(figure) is None or figures[figure] < floor):
                return False
        return True

    def constraint_text(self) -> str:
        parts = []
        if self.config.constraint.max_metric_drop is not None:
            parts.append(f"{self.metric_name} drop <= {self.config.constraint.max_metric_drop:g}")
        if self.config.constraint.min_fidelity is not None:
            parts.append(f"output cosine >= {self.config.constraint.min_fidelity:g}")
        if self.config.constraint.min_neighbours_kept is not None:
            parts.append(f"neighbours kept >= {self.config.constraint.min_neighbours_kept:g}")
        return " and ".join(parts) or "no constraint"


class Measurer(BaseMeasurer):
    """Figures of candidates on a task's validation split, all against the one baseline."""

    def __init__(self, baseline: Any, data: TaskData, task: Task, config: SearchConfig) -> None:
        view = validation_view(data)
        super().__init__(
            baseline,
            config,
            task.timing_batches(view, config.timing_batch),
            higher_is_better=task.higher_is_better,
            metric_name=task.primary_metric,
        )
        self.task, self.data = task, view
        self.inputs = self.data.example_input(config.timing_batch)
        self.fidelity_inputs = self.data.example_input(min(256, len(self.data.test)))
        self.reference_outputs = _outputs(baseline, self.fidelity_inputs)

    def figures(self, model: Any, artifact: Path | None, name: str) -> dict:
        """The candidate's figures (``value``: the task metric on the validation split)."""
        self.refuse_unmeasurable(model, name)
        measured = measure(model, self.data, artifact=artifact, config=self.config.timing.measure, task=self.task)
        batch = self.config.timing_batch
        figures = {
            "metric": measured.metric,
            "value": measured.value,
            "fidelity": output_cosine(self.reference_outputs, _outputs(model, self.fidelity_inputs)),
            "size_bytes": measured.size_bytes,
            "params": measured.params,
            "nonzero_params": measured.nonzero_params,
            **self.speed_figures(model),
            "peak_memory_bytes": measured.peak_memory_bytes,
        }
        if self.config.objective == "memory" and batch != self.config.timing.measure.throughput_batch:
            figures["peak_memory_bytes"] = (
                None
                if isinstance(model, OnnxModule)
                else peak_forward_bytes(lambda: model(self.inputs), _device(model))
            )
        if "neighbours_kept" in measured.metrics:  # a sentence encoder: what a search index would notice
            figures["neighbours_kept"] = measured.metrics["neighbours_kept"]
        elif self.config.constraint.min_neighbours_kept is not None:
            raise ConfigError(
                f"search.constraint.min_neighbours_kept: {name} reports no neighbours kept; the floor applies to "
                f"sentence encoders (data task 'embedding'), this task's metric is {measured.metric}"
            )
        if figures[OBJECTIVE_FIGURES[self.config.objective][0]] is None:
            raise ConfigError(f"search: {self.config.objective} could not be measured for {name}")
        return figures
