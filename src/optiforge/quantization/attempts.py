"""One engine's attempt: build, check, measure fidelity, and search mixed precision when the target is missed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from torch import nn

from optiforge.errors import ConfigError
from optiforge.hardware.inference_compile import FrozenCompiled
from optiforge.quantization.builders import BUILDERS, Built, Job
from optiforge.quantization.config import WHOLE_MODEL_SCHEMES
from optiforge.quantization.fidelity import Fidelity, compare
from optiforge.quantization.fidelity_measurer import float_accuracy
from optiforge.quantization.mixed_precision import mixed_precision
from optiforge.quantization.result_check import check_quantized
from optiforge.quantization.sensitivity import cached_sensitivity, most_sensitive_float, write_sensitivity
from optiforge.quantization.targets import target

log = logging.getLogger("optiforge")


@dataclass
class Attempt:
    """One engine's quantized model and what was measured about it."""

    engine: str
    built: Built | None
    float_layers: list[str]
    fidelity: Fidelity | None = None
    throughput_per_s: float | None = None  # engine: auto, timed only when the target is met
    speedup: float | None = None  # over the float model, timed interleaved with it
    target_met: bool = True
    sensitivity: list[dict] = field(default_factory=list)
    search: list[dict] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict:
        return {
            "engine": self.engine,
            "throughput_per_s": self.throughput_per_s,
            "speedup": self.speedup,
            "target_met": self.target_met,
            "float_layers": self.float_layers,
            "error": self.error,
            **({"fidelity": self.fidelity.as_dict()} if self.fidelity else {}),
        }


def _reference(model: nn.Module) -> nn.Module:
    """The eager graph behind a compiled model: fidelity is measured on it (inductor's int8 kernels compute
    the same quantized arithmetic), so a mixed-precision search does not compile every candidate."""
    return model.model if isinstance(model, FrozenCompiled) else model


def attempt_engine(job: Job, engine: str, float_layers: list[str], evaluation: list, reference: list) -> Attempt:
    config = job.config
    build = BUILDERS[engine]
    engine_job = Job(
        job.model, config, job.batches, job.example, job.folder / engine, job.finetune, job.layers, job.validation
    )

    def evaluate(model: nn.Module) -> Fidelity:
        return compare(_reference(model), batches=evaluation, reference=reference)

    def build_with(layers_in_float: list[str]) -> nn.Module:
        return build(engine_job, layers_in_float).model

    excluded, sensitivity = list(float_layers), []
    sensitive_count = config.layers.float_most_sensitive
    if sensitive_count:
        if sensitive_count >= len(job.layers):
            raise ConfigError(
                f"quantize.layers.float_most_sensitive: {sensitive_count} would keep every one of the "
                f"{len(job.layers)} layers meant for int8 float; give at most {len(job.layers) - 1}"
            )
        sensitivity = cached_sensitivity(job.rankings, engine, build_with, evaluate, job.layers, excluded)
        float_layers = most_sensitive_float([row["layer"] for row in sensitivity], excluded, sensitive_count)
    built = build(engine_job, float_layers)
    if job.example is not None:
        check_quantized(built.model, job.example, config.scheme, engine)
    attempt = Attempt(engine, built, list(float_layers), sensitivity=sensitivity)
    if built.unsupported:
        log.warning(
            "quantize (%s, %s): layers left in float because the engine cannot quantize them: %s",
            config.scheme,
            engine,
            ", ".join(built.unsupported),
        )
    if not evaluation:
        return attempt
    attempt.fidelity = evaluate(built.model)
    constrained = config.has_target or config.engine == "auto"
    attempt.target_met = not constrained or attempt.fidelity.meets(*target(config))
    layers = [name for name in job.layers if name not in built.unsupported]
    searchable = config.scheme not in WHOLE_MODEL_SCHEMES  # casts are whole-model; QAT would retrain
    wants_search = searchable and config.has_target and not attempt.target_met
    if not ((config.sensitivity or wants_search or sensitivity) and layers and searchable):
        return attempt
    if not sensitivity:
        sensitivity = cached_sensitivity(job.rankings, engine, build_with, evaluate, layers, excluded)
    attempt.sensitivity = sensitivity
    write_sensitivity(attempt.sensitivity, engine_job.folder, f"int8 sensitivity per layer ({config.scheme}, {engine})")
    if wants_search:  # the target asks for more float layers: k = sensitive_count + 1, + 2, ...
        ranked = [row["layer"] for row in attempt.sensitivity if row["layer"] in layers]
        searched = mixed_precision(
            job.model,
            config,
            lambda model, layers_in_float: build(replace(engine_job, model=model), layers_in_float).model,
            evaluate,
            ranked,
            excluded,
            first=sensitive_count + 1,
            accuracy=float_accuracy(evaluation, reference),
            folder=engine_job.folder,
        )
        attempt.search = searched.rows
        if searched.chosen is None:
            log.warning("quantize (%s): %s", engine, searched.reason)
        else:
            chosen = searched.chosen
            unsupported = [name for name in built.unsupported if name not in chosen.float_layers]
            attempt.built = Built(chosen.model, unsupported)
            attempt.float_layers, attempt.fidelity, attempt.target_met = chosen.float_layers, chosen.fidelity, True
    return attempt
