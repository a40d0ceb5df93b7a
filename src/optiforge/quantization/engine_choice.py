"""Engine choice: the candidate engines for a scheme; one is attempted, several are searched
(:mod:`~optiforge.quantization.engine_search`), and the fastest that meets the target is kept."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from torch import nn

from optiforge.bench.selection import Candidate, select
from optiforge.errors import ConfigError, OptiforgeError
from optiforge.layers import WEIGHTED_TYPES, weighted_layers
from optiforge.quantization.attempts import attempt_engine
from optiforge.quantization.builders import Job
from optiforge.quantization.calibration import check_fits, model_inputs, take_batches
from optiforge.quantization.config import QuantConfig
from optiforge.quantization.engine_search import search_engines
from optiforge.quantization.fidelity import float_outputs, labels_of
from optiforge.quantization.result import QuantizeResult
from optiforge.quantization.schemes import candidates, require
from optiforge.quantization.targets import target_text
from optiforge.training.finetune import Finetune

log = logging.getLogger("optiforge")

NEEDS_CALIBRATION = ("int8_static", "qat_int8")
TRACING_ENGINES = ("openvino",)


def _float_layers(model: nn.Module, config: QuantConfig) -> tuple[list[str], list[str]]:
    """(layers meant for int8, layers kept float) as ``config.layers`` says; a pattern matching nothing is refused."""
    chosen = config.layers.select(model, WEIGHTED_TYPES, "quantize.layers", require=False)
    return list(chosen), [name for name in weighted_layers(model) if name not in chosen]


def _quantize(
    original: nn.Module,
    model: nn.Module,
    config: QuantConfig,
    calibration: Iterable | None,
    validation: Iterable | None,
    finetune: Finetune | None,
    folder: Path,
    rankings: dict | None = None,
) -> QuantizeResult:
    layers, float_layers = _float_layers(model, config)
    batches: list[Any] = []
    if calibration is not None or config.scheme in NEEDS_CALIBRATION:
        batches = take_batches(calibration, config.calibration.batches)
        check_fits(model, batches[0])
    evaluation = list(validation) if validation is not None else []
    if validation is not None and not evaluation:
        raise ConfigError("quantize: the validation loader yielded no batches")
    measured = config.has_target or config.engine == "auto" or config.layers.float_most_sensitive
    if not evaluation and calibration is not None and measured:
        evaluation = list(itertools.islice(calibration, config.calibration.batches))
    if evaluation:
        check_fits(model, model_inputs(evaluation[0]), "validation")
    elif config.has_target:
        raise ConfigError("quantize.target: checking a target needs validation=loader (or calibration=loader)")
    elif config.layers.float_most_sensitive:
        raise ConfigError(
            "quantize.layers.float_most_sensitive: ranking the layers needs validation=loader (or calibration=loader)"
        )
    example = batches[0] if batches else (model_inputs(evaluation[0]) if evaluation else None)
    job = Job(model, config, batches, example, folder, finetune, layers, evaluation, rankings)

    if config.engine == "auto":
        engines = candidates(config.scheme)
        if example is None:  # without data, leave out the engines that convert by tracing an example batch
            engines = [engine for engine in engines if engine not in TRACING_ENGINES] or engines
        if not engines:
            raise ConfigError(f"quantize: no installed engine runs scheme '{config.scheme}'")
    else:
        require(config.engine)
        engines = [config.engine]
    if len(engines) > 1 and example is None:
        raise ConfigError(
            "quantize.engine: 'auto' measures every engine on real inputs; pass calibration=loader "
            f"(or validation=loader), or name an engine: {', '.join(engines)}"
        )
    if config.target.max_metric_drop is not None and labels_of(evaluation[0]) is None:
        raise ConfigError(
            "quantize.target.max_metric_drop needs validation batches with labels ((inputs, targets) pairs); "
            "for unlabelled data use target.min_fidelity (output cosine)"
        )
    reference = float_outputs(model, evaluation) if evaluation else []
    constrained = bool(evaluation) and (config.has_target or config.engine == "auto")
    constraint = target_text(config) if constrained else "no target"
    if len(engines) > 1:
        attempts, chosen, reason = search_engines(job, engines, float_layers, evaluation, reference)
        if all(attempt.built is None for attempt in attempts):
            raise OptiforgeError(
                "quantize: no engine could quantize the model: "
                + "; ".join(f"{attempt.engine}: {attempt.error}" for attempt in attempts)
            )
    else:
        attempts = [attempt_engine(job, engines[0], float_layers, evaluation, reference)]
        only = Candidate(engines[0], 0.0, attempts[0].target_met, payload=attempts[0])
        selection = select([only], objective="target", maximize=True, constraint=constraint)
        chosen = attempts[0] if selection.chosen else None
        if chosen is None:
            reason = selection.reason
        elif config.engine != "auto":
            reason = f"engine '{config.engine}' was asked for" + (f"; it meets {constraint}" if constrained else "")
        else:
            reason = f"the only installed engine for {config.scheme} on this toolkit"
    summaries = [attempt.summary() for attempt in attempts] if len(attempts) > 1 else []
    if chosen is None:
        log.warning("quantize (%s): %s", config.scheme, reason)
        single = attempts[0] if len(attempts) == 1 else None
        return QuantizeResult(
            model=original,
            scheme=config.scheme,
            engine=None,
            reason=reason,
            float_layers=list(weighted_layers(model)),
            unsupported_layers=[],
            fidelity=None,
            candidates=summaries,
            baseline_kept=True,
            target_met=False,
            sensitivity=single.sensitivity if single else [],
            search=single.search if single else [],
        )
    built = chosen.built
    writer = None
    if chosen.engine != "onnxruntime":
        from optiforge.quantization.export import onnx_export_for

        writer = onnx_export_for(config, model, batches, chosen.float_layers, built.trained)
    return QuantizeResult(
        model=built.model,
        scheme=config.scheme,
        engine=chosen.engine,
        reason=reason,
        float_layers=chosen.float_layers,
        unsupported_layers=built.unsupported,
        fidelity=chosen.fidelity,
        candidates=summaries,
        baseline_kept=False,
        target_met=chosen.target_met,
        sensitivity=chosen.sensitivity,
        search=chosen.search,
        history=built.history,
        onnx_writer=writer,
    )
