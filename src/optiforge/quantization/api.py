"""``quantize``: one verb for every scheme and engine.

Each engine is a builder ``(job, float_layers) -> (model, layers left float)``
registered in ``BUILDERS``; ``engine: auto`` builds every installed candidate,
measures its fidelity and throughput and keeps the fastest that meets the
target. With a target, a candidate that misses it gets the mixed-precision
search (:mod:`optiforge.quantization.sensitivity`).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.errors import ConfigError, OptiforgeError
from optiforge.quantization import torch_engine
from optiforge.quantization.calibration import call, check_fits, model_inputs, take_batches
from optiforge.quantization.config import QuantConfig
from optiforge.quantization.fidelity import Fidelity, compare, float_outputs, labels_of
from optiforge.quantization.schemes import candidates, require
from optiforge.quantization.sensitivity import layer_sensitivity, mixed_precision, write_sensitivity
from optiforge.registry import closest

log = logging.getLogger("optiforge")

# with engine: auto and no target, a candidate must keep this output cosine to the float model
AUTO_MIN_FIDELITY = 0.99
NEEDS_CALIBRATION = ("int8_static", "qat_int8")
THROUGHPUT_BATCH = 256


@dataclass
class Job:
    """What every builder needs: the float model, settings, data and a folder."""

    model: nn.Module
    config: QuantConfig
    batches: list[Any]  # calibration model inputs
    example: Any  # one batch of model inputs (tracing, export, timing)
    folder: Path
    finetune: Callable[[nn.Module, int], nn.Module] | None = None


@dataclass
class Attempt:
    """One engine's quantized model and what was measured about it."""

    engine: str
    model: nn.Module
    float_layers: list[str]
    unsupported: list[str]
    fidelity: Fidelity | None = None
    throughput_per_s: float | None = None
    target_met: bool = True
    sensitivity: list[dict] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict:
        return {
            "engine": self.engine,
            "throughput_per_s": self.throughput_per_s,
            "target_met": self.target_met,
            "float_layers": self.float_layers,
            "error": self.error,
            **({"fidelity": self.fidelity.as_dict()} if self.fidelity else {}),
        }


def _build_torch(job: Job, float_layers: list[str]) -> tuple[nn.Module, list[str]]:
    scheme = job.config.scheme
    if scheme in ("fp16", "bf16"):
        return torch_engine.cast(job.model, scheme), []
    if scheme == "int8_dynamic":
        return torch_engine.dynamic(job.model, job.config, float_layers)
    if scheme == "int8_static":
        model = torch_engine.static(job.model, job.config, job.batches, float_layers)
    else:  # qat_int8
        if job.finetune is None:
            raise ConfigError(
                "quantize: scheme 'qat_int8' needs finetune=callable(model, epochs) -> model "
                "(the recipe stage trains with the recipe's settings)"
            )
        prepared = torch_engine.prepare_qat(job.model, job.config, job.example, float_layers)
        trained = job.finetune(prepared, job.config.qat_epochs)
        model = torch_engine.convert_qat(trained)
        # kept outside the module tree (not in state_dict): ONNX export starts from the trained fake quantization
        object.__setattr__(model, "_qat_source", trained)
    layers = torch_engine.quantizable_layers(job.model)
    return model, torch_engine.unconverted_layers(model, float_layers, layers)


def _build_torchao(job: Job, float_layers: list[str]) -> tuple[nn.Module, list[str]]:
    from optiforge.quantization.torchao_engine import quantize_torchao

    return quantize_torchao(job.model, job.config, float_layers)


def _build_onnxruntime(job: Job, float_layers: list[str]) -> tuple[nn.Module, list[str]]:
    from optiforge.quantization.onnx_runtime import quantize_with_onnxruntime

    if job.example is None:
        raise ConfigError(
            "quantize: engine 'onnxruntime' exports the model and needs an example batch; pass calibration=loader"
        )
    batches = job.batches if job.config.scheme == "int8_static" else None
    layers = torch_engine.quantizable_layers(job.model)
    return quantize_with_onnxruntime(job.model, job.config, batches, job.example, float_layers, job.folder, layers)


BUILDERS: dict[str, Callable[[Job, list[str]], tuple[nn.Module, list[str]]]] = {
    "torch": _build_torch,
    "torchao": _build_torchao,
    "onnxruntime": _build_onnxruntime,
}


def _timing_batch(job: Job) -> Any:
    example = job.example
    if not torch.is_tensor(example):
        return example
    rows = torch.cat([batch for batch in job.batches if torch.is_tensor(batch)] or [example])
    repeats = -(-THROUGHPUT_BATCH // rows.shape[0])
    return rows.repeat(repeats, *([1] * (rows.dim() - 1)))[:THROUGHPUT_BATCH]


@torch.inference_mode()
def throughput(model: nn.Module, batch: Any, repeats: int = 5) -> float:
    """Samples per second at one batch, median of ``repeats`` after warm-up."""
    from optiforge.bench.measure import _timed

    size = batch.shape[0] if torch.is_tensor(batch) else next(iter(batch.values())).shape[0]
    times = _timed(lambda: call(model, batch), repeats, 2, torch.device("cpu"))
    return size / statistics.median(times)


def _attempt(job: Job, engine: str, evaluation: list, reference: list) -> Attempt:
    config = job.config
    build = BUILDERS[engine]
    sub_folder = job.folder / engine
    engine_job = Job(job.model, config, job.batches, job.example, sub_folder, job.finetune)
    model, unsupported = build(engine_job, list(config.exclude))
    attempt = Attempt(engine, model, list(config.exclude), unsupported)
    if unsupported:
        log.warning(
            "quantize (%s, %s): layers left in float because the engine cannot quantize them: %s",
            config.scheme,
            engine,
            ", ".join(unsupported),
        )
    if evaluation:
        evaluate = functools.partial(compare, batches=evaluation, reference=reference)
        attempt.fidelity = evaluate(model)
        target = (config.max_metric_drop, config.min_fidelity)
        if not config.has_target and config.engine == "auto":
            target = (None, AUTO_MIN_FIDELITY)
        attempt.target_met = attempt.fidelity.meets(*target)
        layers = [
            name
            for name in torch_engine.quantizable_layers(job.model)
            if name not in config.exclude and name not in unsupported
        ]
        searchable = config.scheme not in ("fp16", "bf16", "qat_int8")  # casts are whole-model; QAT would retrain
        wants_search = searchable and config.has_target and not attempt.target_met
        if (config.sensitivity or wants_search) and layers and searchable:

            def build_with(float_layers: list[str]) -> nn.Module:
                return build(engine_job, float_layers)[0]

            attempt.sensitivity = layer_sensitivity(build_with, evaluate, layers, list(config.exclude))
            write_sensitivity(
                attempt.sensitivity, sub_folder, f"int8 sensitivity per layer ({config.scheme}, {engine})"
            )
            if wants_search:
                ranked = [row["layer"] for row in attempt.sensitivity]
                model, float_layers, fidelity, met = mixed_precision(
                    build_with, evaluate, ranked, list(config.exclude), *target
                )
                attempt.model, attempt.float_layers, attempt.fidelity, attempt.target_met = (
                    model,
                    float_layers,
                    fidelity,
                    met,
                )
                if not met:
                    log.warning(
                        "quantize (%s): the target was not met even with %d layers in float", engine, len(float_layers)
                    )
    return attempt


def _measure_speeds(attempts: list[Attempt], batch: Any, rounds: int = 3) -> None:
    """Best throughput of each candidate over rounds that visit them in turn.

    Interleaving spreads a burst of load from other processes over all
    candidates instead of landing on one.
    """
    for _ in range(rounds):
        for attempt in attempts:
            if attempt.error is None:
                speed = throughput(attempt.model, batch)
                attempt.throughput_per_s = max(attempt.throughput_per_s or 0.0, speed)


def _target_text(config: QuantConfig) -> str:
    parts = []
    if config.max_metric_drop is not None:
        parts.append(f"metric drop <= {config.max_metric_drop:g}")
    if config.min_fidelity is not None or not config.has_target:
        parts.append(f"output cosine >= {config.min_fidelity or AUTO_MIN_FIDELITY:g}")
    return " and ".join(parts)


def _choose(attempts: list[Attempt], target: str) -> tuple[Attempt, str]:
    working = [attempt for attempt in attempts if attempt.error is None]
    if not working:
        raise OptiforgeError(
            "quantize: no engine could quantize the model: "
            + "; ".join(f"{attempt.engine}: {attempt.error}" for attempt in attempts)
        )
    meeting = [attempt for attempt in working if attempt.target_met]
    pool = meeting or working
    best = max(pool, key=lambda attempt: attempt.throughput_per_s or 0.0)
    others = ", ".join(
        f"{attempt.engine} {attempt.throughput_per_s:.0f}/s"
        for attempt in working
        if attempt is not best and attempt.throughput_per_s
    )
    if meeting:
        reason = f"fastest meeting the target ({target}): {best.throughput_per_s:.0f} samples/s at batch 256"
    else:
        reason = f"no engine met the target ({target}); kept the fastest: {best.throughput_per_s:.0f} samples/s"
    reason += f" (others: {others})" if others else ""
    return best, reason


def check_exclude(model: nn.Module, config: QuantConfig) -> None:
    """Refuse names in ``config.exclude`` that are not modules of ``model``."""
    names = dict(model.named_modules())
    for name in config.exclude:
        if name not in names:
            layers = ", ".join(torch_engine.quantizable_layers(model))
            raise ConfigError(
                f"quantize.exclude: the model has no module '{name}'{closest(name, list(names))}; layers: {layers}"
            )


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    calibration: Iterable | None = None,
    *,
    validation: Iterable | None = None,
    finetune: Callable[[nn.Module, int], nn.Module] | None = None,
    output_dir: str | Path | None = None,
) -> nn.Module:
    """Quantize ``model`` as ``config`` says and return a module that runs.

    ``calibration`` yields model inputs (or ``(inputs, targets)`` pairs);
    ``validation`` (with labels for classifiers) measures fidelity for
    ``engine: auto`` and mixed precision; ``finetune(model, epochs)`` trains
    the fake-quantized model for ``qat_int8``. The returned module carries a
    summary in ``optiforge_quantization`` (engine chosen and why, layers kept float).

    >>> import torch, optiforge
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> loader = [torch.randn(8, 16) for _ in range(4)]
    >>> quantized = optiforge.quantize(model, optiforge.QuantConfig(scheme="int8_static", engine="torch"),
    ...                                calibration=loader)
    >>> quantized(torch.randn(2, 16)).shape
    torch.Size([2, 4])
    >>> quantized.optiforge_quantization["engine"]
    'torch'
    """
    config = QuantConfig() if config is None else config
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"quantize: config must be a QuantConfig, got {type(config).__name__}")
    was_training = model.training
    if any(tensor.device.type != "cpu" for tensor in [*model.parameters(), *model.buffers()]):
        model = copy.deepcopy(model).cpu()  # int8 kernels are CPU kernels; the caller's model stays where it is
    model.eval()
    check_exclude(model, config)
    batches: list[Any] = []
    if calibration is not None or config.scheme in NEEDS_CALIBRATION:
        batches = take_batches(calibration, config.calibration_batches)
        check_fits(model, batches[0])
    evaluation = list(validation) if validation is not None else []
    if validation is not None and not evaluation:
        raise ConfigError("quantize: the validation loader yielded no batches")
    if not evaluation and calibration is not None and (config.has_target or config.engine == "auto"):
        evaluation = list(itertools.islice(calibration, config.calibration_batches))
    if evaluation:
        check_fits(model, model_inputs(evaluation[0]), "validation")
    example = batches[0] if batches else (model_inputs(evaluation[0]) if evaluation else None)
    folder = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="optiforge-quantize-"))
    job = Job(model, config, batches, example, folder, finetune)

    if config.engine == "auto":
        engines = candidates(config.scheme)
        if not engines:
            raise ConfigError(f"quantize: no installed engine runs scheme '{config.scheme}'")
    else:
        require(config.engine)
        engines = [config.engine]
    reference = float_outputs(model, evaluation) if evaluation else []
    if len(engines) > 1 and example is None:
        raise ConfigError(
            "quantize.engine: 'auto' measures every engine on real inputs; pass calibration=loader "
            f"(or validation=loader), or name an engine: {', '.join(engines)}"
        )
    if config.max_metric_drop is not None and evaluation and labels_of(evaluation[0]) is None:
        raise ConfigError(
            "quantize.max_metric_drop needs validation batches with labels ((inputs, targets) pairs); "
            "for unlabelled data use min_fidelity (output cosine)"
        )
    attempts: list[Attempt] = []
    for engine in engines:
        started = time.perf_counter()
        try:
            attempts.append(_attempt(job, engine, evaluation, reference))
        except OptiforgeError as error:
            if len(engines) == 1:
                raise
            log.warning("quantize: engine %s skipped: %s", engine, error)
            attempts.append(Attempt(engine, model, [], [], target_met=False, error=str(error)))
        log.info("quantize: %s took %.1f s", engine, time.perf_counter() - started)
    if len(engines) > 1:
        _measure_speeds(attempts, _timing_batch(job))
        chosen, reason = _choose(attempts, _target_text(config))
    else:
        asked = config.engine != "auto"
        chosen = attempts[0]
        reason = (
            f"engine '{config.engine}' was asked for"
            if asked
            else f"the only installed engine for {config.scheme} on this toolkit"
        )
    model.train(was_training)
    return _finish(chosen, reason, attempts, job)


def _finish(chosen: Attempt, reason: str, attempts: list[Attempt], job: Job) -> nn.Module:
    model = chosen.model
    summary = {
        "scheme": job.config.scheme,
        "engine": chosen.engine,
        "engine_reason": reason,
        "float_layers": chosen.float_layers,
        "unsupported_layers": chosen.unsupported,
        "target_met": chosen.target_met,
        "candidates": [attempt.summary() for attempt in attempts] if len(attempts) > 1 else [],
        "sensitivity": chosen.sensitivity,
        **({"fidelity": chosen.fidelity.as_dict()} if chosen.fidelity else {}),
    }
    model.optiforge_quantization = summary
    if chosen.engine != "onnxruntime":
        from optiforge.quantization.export import onnx_export_for

        model.optiforge_onnx_export = onnx_export_for(job, chosen.float_layers, getattr(model, "_qat_source", None))
    return model
