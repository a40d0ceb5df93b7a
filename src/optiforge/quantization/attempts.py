"""One engine's attempt: build, check, measure fidelity, and search mixed precision when the target is missed."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

from optiforge.errors import ConfigError
from optiforge.hardware.inference_compile import FrozenCompiled
from optiforge.quantization.builders import BUILDERS, Built, Job
from optiforge.quantization.config import WHOLE_MODEL_SCHEMES, QuantConfig
from optiforge.quantization.fidelity import Fidelity, compare
from optiforge.quantization.result_check import check_quantized
from optiforge.quantization.sensitivity import (
    cached_sensitivity,
    mixed_precision,
    most_sensitive_float,
    write_sensitivity,
)

log = logging.getLogger("optiforge")

# with engine: auto and no target, a candidate must keep this output cosine to the float model
AUTO_MIN_FIDELITY = 0.99


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


def target(config: QuantConfig) -> tuple[float | None, float | None]:
    if config.has_target:
        return config.target.max_metric_drop, config.target.min_fidelity
    return None, AUTO_MIN_FIDELITY


def target_text(config: QuantConfig) -> str:
    max_metric_drop, min_fidelity = target(config)
    parts = [f"metric drop <= {max_metric_drop:g}"] if max_metric_drop is not None else []
    if min_fidelity is not None:
        parts.append(f"output cosine >= {min_fidelity:g}")
    return " and ".join(parts)


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
        selection = mixed_precision(
            build_with, evaluate, ranked, excluded, *target(config), target_text(config), first=sensitive_count + 1
        )
        attempt.search = [candidate.summary() for candidate in selection.candidates]
        if selection.chosen is None:
            log.warning("quantize (%s): %s", engine, selection.reason)
        else:
            model, chosen_float, fidelity = selection.chosen.payload
            unsupported = [name for name in built.unsupported if name not in chosen_float]
            attempt.built = Built(model, unsupported)
            attempt.float_layers, attempt.fidelity, attempt.target_met = chosen_float, fidelity, True
    return attempt
