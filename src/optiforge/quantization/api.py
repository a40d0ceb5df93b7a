"""``quantize``: one verb for every scheme and engine.

Each engine is a builder ``(job, float_layers) -> Built`` registered in
``BUILDERS``; ``engine: auto`` builds every installed candidate, measures its
fidelity and throughput (:func:`optiforge.bench.timing.interleaved`) and keeps
the fastest that meets the target (:func:`optiforge.bench.selection.select`);
when none meets it, the float model ships unchanged and the reason says so.
With a target, a candidate that misses it gets the mixed-precision search
(:mod:`optiforge.quantization.sensitivity`).
"""

from __future__ import annotations

import copy
import functools
import itertools
import logging
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optiforge.bench.selection import Candidate, select
from optiforge.bench.timing import interleaved, per_second
from optiforge.errors import ConfigError, OptiforgeError
from optiforge.exporters.onnx import OnnxModule
from optiforge.exporters.openvino import OpenVinoModule, copy_ir
from optiforge.hardware.inference_compile import FrozenCompiled
from optiforge.layers import WEIGHTED_TYPES, weighted_layers
from optiforge.quantization import torch_engine
from optiforge.quantization.calibration import call, check_fits, model_inputs, take_batches
from optiforge.quantization.casts import check_cast
from optiforge.quantization.config import WHOLE_MODEL_SCHEMES, QuantConfig
from optiforge.quantization.fidelity import Fidelity, compare, float_outputs, labels_of
from optiforge.quantization.memory import OnnxInMemory
from optiforge.quantization.result_check import check_quantized
from optiforge.quantization.schemes import candidates, require
from optiforge.quantization.sensitivity import (
    cached_sensitivity,
    mixed_precision,
    most_sensitive_float,
    write_sensitivity,
)
from optiforge.training.finetune import Finetune

log = logging.getLogger("optiforge")

# with engine: auto and no target, a candidate must keep this output cosine to the float model
AUTO_MIN_FIDELITY = 0.99
NEEDS_CALIBRATION = ("int8_static", "qat_int8")
TRACING_ENGINES = ("openvino",)
THROUGHPUT_BATCH = 256
# fake quantization is fine-tuned gently: a tenth of the recipe's learning rate unless finetune.lr is set
QAT_LR_SCALE = 0.1


@dataclass
class Job:
    """What every builder needs: the float model, settings, data and a folder."""

    model: nn.Module
    config: QuantConfig
    batches: list[Any]  # calibration model inputs
    example: Any  # one batch of model inputs (tracing, export, timing)
    folder: Path
    finetune: Finetune | None = None
    layers: list[str] = field(default_factory=list)  # the layers meant for int8
    validation: list[Any] = field(default_factory=list)  # validation batches, labels kept (accuracy control)
    rankings: dict | None = None  # engine -> sensitivity rows, shared by calls that differ only in k


@dataclass
class Built:
    """One builder's output: the quantized model and the layers the engine had to leave float."""

    model: nn.Module
    unsupported: list[str]
    trained: nn.Module | None = None  # qat_int8: the fine-tuned fake-quantized model (its ONNX export)
    history: list[dict] = field(default_factory=list)


@dataclass
class Attempt:
    """One engine's quantized model and what was measured about it."""

    engine: str
    built: Built | None
    float_layers: list[str]
    fidelity: Fidelity | None = None
    throughput_per_s: float | None = None
    target_met: bool = True
    sensitivity: list[dict] = field(default_factory=list)
    search: list[dict] = field(default_factory=list)
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


@dataclass
class QuantizeResult:
    """The quantized model and what was done to reach it.

    ``engine`` is ``None`` and ``baseline_kept`` true when no candidate met
    the target: ``model`` is then the float model, unchanged. ``export_onnx``
    writes the model's ONNX graph (int8 where ONNX Runtime can run it).
    """

    model: nn.Module
    scheme: str
    engine: str | None
    reason: str
    float_layers: list[str]
    unsupported_layers: list[str]
    fidelity: Fidelity | None
    candidates: list[dict]
    baseline_kept: bool
    target_met: bool
    sensitivity: list[dict] = field(default_factory=list)
    search: list[dict] = field(default_factory=list)  # mixed precision: one row per number of float layers tried
    history: list[dict] = field(default_factory=list)  # qat_int8 training
    onnx_writer: Callable[[Path, Any], Path] | None = field(default=None, repr=False)

    def export_onnx(self, path: str | Path, example_input: Any) -> Path:
        """Write this model as ONNX at ``path`` (QDQ/integer ops for int8 schemes ONNX Runtime runs)."""
        if self.onnx_writer is not None:
            return self.onnx_writer(Path(path), example_input)
        from optiforge.exporters.onnx import export_onnx_format

        return export_onnx_format(self.model, Path(path), example_input)

    def summary(self) -> dict:
        return {
            "scheme": self.scheme,
            "engine": self.engine,
            "engine_reason": self.reason,
            "baseline_kept": self.baseline_kept,
            "target_met": self.target_met,
            "float_layers": self.float_layers,
            "unsupported_layers": self.unsupported_layers,
            "candidates": self.candidates,
            **({"fidelity": self.fidelity.as_dict()} if self.fidelity else {}),
        }


def _build_torch(job: Job, float_layers: list[str]) -> Built:
    scheme = job.config.scheme
    if scheme in ("fp16", "bf16"):
        cast = torch_engine.cast(job.model, scheme)
        check_cast(job.model, cast, job.example, job.config)
        return Built(cast, [])
    if scheme == "int8_dynamic":
        return Built(*torch_engine.dynamic(job.model, job.config, float_layers))
    trained, history = None, []
    if scheme == "int8_static":
        model = torch_engine.static(job.model, job.config, job.batches, float_layers)
    else:  # qat_int8
        if job.finetune is None:
            raise ConfigError(
                "quantize: scheme 'qat_int8' needs finetune= a fine-tune callable, e.g. "
                "optiforge.training.finetune.finetuner(data) (the recipe stage trains with the recipe's settings)"
            )
        prepared = torch_engine.prepare_qat(job.model, job.config, job.example, float_layers)
        result = job.finetune(prepared, job.config.finetune, name="qat", lr_scale=QAT_LR_SCALE)
        trained, history = result.model.cpu(), list(result.history)
        model = torch_engine.convert_qat(trained)
    return Built(model, torch_engine.unconverted_layers(model, float_layers, job.layers), trained, history)


def _build_pt2e(job: Job, float_layers: list[str]) -> Built:
    from optiforge.quantization import pt2e_engine

    scheme = job.config.scheme
    if scheme == "int8_static":
        return Built(pt2e_engine.static(job.model, job.batches, float_layers), [])
    if scheme == "int8_dynamic":
        return Built(*pt2e_engine.dynamic(job.model, job.example, float_layers))
    if job.finetune is None:
        raise ConfigError("quantize: scheme 'qat_int8' needs finetune= a fine-tune callable (see engine torch)")
    prepared = pt2e_engine.prepare_qat(job.model, job.example, float_layers)
    result = job.finetune(prepared, job.config.finetune, name="qat", lr_scale=QAT_LR_SCALE)
    return Built(pt2e_engine.convert_qat(result.model, job.example), [], None, list(result.history))


def _build_torchao(job: Job, float_layers: list[str]) -> Built:
    from optiforge.quantization.torchao_engine import quantize_torchao

    return Built(*quantize_torchao(job.model, job.config, float_layers))


def _build_onnxruntime(job: Job, float_layers: list[str]) -> Built:
    from optiforge.quantization.onnx_runtime import quantize_with_onnxruntime

    if job.example is None:
        raise ConfigError(
            "quantize: engine 'onnxruntime' exports the model and needs an example batch; pass calibration=loader"
        )
    batches = job.batches if job.config.scheme == "int8_static" else None
    return Built(
        *quantize_with_onnxruntime(job.model, job.config, batches, job.example, float_layers, job.folder, job.layers)
    )


def _build_openvino(job: Job, float_layers: list[str]) -> Built:
    from optiforge.quantization.openvino_engine import quantize_openvino

    return Built(
        *quantize_openvino(job.model, job.config, job.batches, job.example, float_layers, job.folder, job.validation)
    )


BUILDERS: dict[str, Callable[[Job, list[str]], Built]] = {
    "torch": _build_torch,
    "pt2e": _build_pt2e,
    "torchao": _build_torchao,
    "onnxruntime": _build_onnxruntime,
    "openvino": _build_openvino,
}


def _reference(model: nn.Module) -> nn.Module:
    """The eager graph behind a compiled model: fidelity is measured on it (inductor's int8 kernels compute
    the same quantized arithmetic), so a mixed-precision search does not compile every candidate."""
    return model.model if isinstance(model, FrozenCompiled) else model


def _timing_batch(job: Job) -> Any:
    example = job.example
    if not torch.is_tensor(example):
        return example
    rows = torch.cat([batch for batch in job.batches if torch.is_tensor(batch)] or [example])
    repeats = -(-THROUGHPUT_BATCH // rows.shape[0])
    return rows.repeat(repeats, *([1] * (rows.dim() - 1)))[:THROUGHPUT_BATCH]


@torch.inference_mode()
def _measure_speeds(attempts: list[Attempt], batch: Any) -> None:
    """Samples per second of every candidate that meets the target, timed in interleaved rounds.

    The others can never be chosen, so they are not timed: a slow, unfaithful engine (torch.ao int8 on
    EfficientNet-Lite0 runs at a few images per second) would otherwise dominate the stage's time.
    """
    size = batch.shape[0] if torch.is_tensor(batch) else next(iter(batch.values())).shape[0]
    working = {attempt.engine: attempt for attempt in attempts if attempt.built is not None and attempt.target_met}
    runs = {engine: functools.partial(call, attempt.built.model, batch) for engine, attempt in working.items()}
    for engine, seconds in interleaved(runs, rounds=3, repeats=5, warmup=2).items():
        working[engine].throughput_per_s = per_second(size, seconds)


def _target(config: QuantConfig) -> tuple[float | None, float | None]:
    if config.has_target:
        return config.target.max_metric_drop, config.target.min_fidelity
    return None, AUTO_MIN_FIDELITY


def _target_text(config: QuantConfig) -> str:
    max_metric_drop, min_fidelity = _target(config)
    parts = [f"metric drop <= {max_metric_drop:g}"] if max_metric_drop is not None else []
    if min_fidelity is not None:
        parts.append(f"output cosine >= {min_fidelity:g}")
    return " and ".join(parts)


def _attempt(job: Job, engine: str, float_layers: list[str], evaluation: list, reference: list) -> Attempt:
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
    attempt.target_met = not constrained or attempt.fidelity.meets(*_target(config))
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
            build_with, evaluate, ranked, excluded, *_target(config), _target_text(config), first=sensitive_count + 1
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


def _float_layers(model: nn.Module, config: QuantConfig) -> tuple[list[str], list[str]]:
    """(layers meant for int8, layers kept float) as ``config.layers`` says; a pattern matching nothing is refused."""
    chosen = config.layers.select(model, WEIGHTED_TYPES, "quantize.layers", require=False)
    return list(chosen), [name for name in weighted_layers(model) if name not in chosen]


def quantize_with_result(
    model: nn.Module,
    config: QuantConfig | None = None,
    calibration: Iterable | None = None,
    *,
    validation: Iterable | None = None,
    finetune: Finetune | None = None,
    output_dir: str | Path | None = None,
    rankings: dict | None = None,
) -> QuantizeResult:
    """Quantize ``model`` as ``config`` says; the module and what was done (see :func:`quantize`).

    ``rankings`` (a dict the caller keeps) holds the per-layer sensitivity of each engine, so calls on the
    same model, data and settings that differ only in ``layers.float_most_sensitive`` rank the layers once.

    >>> import torch, optiforge
    >>> from optiforge.quantization import quantize_with_result
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> loader = [torch.randn(8, 16) for _ in range(4)]
    >>> result = quantize_with_result(model, optiforge.QuantConfig(scheme="int8_static", engine="torch"),
    ...                               calibration=loader)
    >>> result.engine, result.baseline_kept
    ('torch', False)
    """
    config = QuantConfig() if config is None else config
    if not isinstance(config, QuantConfig):
        raise ConfigError(f"quantize: config must be a QuantConfig, got {type(config).__name__}")
    original, was_training = model, model.training
    if any(tensor.device.type != "cpu" for tensor in [*model.parameters(), *model.buffers()]):
        model = copy.deepcopy(model).cpu()  # int8 kernels are CPU kernels; the caller's model stays where it is
    model.eval()
    try:
        if output_dir is not None:
            return _quantize(original, model, config, calibration, validation, finetune, Path(output_dir), rankings)
        with tempfile.TemporaryDirectory(prefix="optiforge-quantize-") as folder:
            result = _quantize(original, model, config, calibration, validation, finetune, Path(folder), rankings)
            if isinstance(result.model, OnnxModule) and result.model.path is not None:
                result.model = OnnxInMemory(result.model)  # the folder goes; the graph stays in memory
            elif isinstance(result.model, OpenVinoModule):
                _keep_while_alive(result.model)  # the folder goes; the IR lives as long as the module
            return result
    finally:
        original.train(was_training)


def _keep_while_alive(model: OpenVinoModule) -> None:
    """Move the module's IR out of the temporary folder into one removed when the module is collected."""
    keep = Path(tempfile.mkdtemp(prefix="optiforge-openvino-"))
    model.path = copy_ir(model.path, keep / model.path.name)
    weakref.finalize(model, shutil.rmtree, keep, True)


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
    attempts: list[Attempt] = []
    for engine in engines:
        try:
            attempts.append(_attempt(job, engine, float_layers, evaluation, reference))
        except OptiforgeError as error:
            if len(engines) == 1:
                raise
            log.warning("quantize: engine %s skipped: %s", engine, error)
            attempts.append(Attempt(engine, None, [], target_met=False, error=str(error)))
    if len(engines) > 1:
        if all(attempt.built is None for attempt in attempts):
            raise OptiforgeError(
                "quantize: no engine could quantize the model: "
                + "; ".join(f"{attempt.engine}: {attempt.error}" for attempt in attempts)
            )
        if any(attempt.target_met and attempt.built is not None for attempt in attempts):
            _measure_speeds(attempts, _timing_batch(job))  # nothing to rank when the float model ships
    constrained = bool(evaluation) and (config.has_target or config.engine == "auto")
    constraint = _target_text(config) if constrained else "no target"
    selection = select(
        [
            Candidate(
                attempt.engine,
                attempt.throughput_per_s if len(engines) > 1 else 0.0,
                attempt.target_met,
                attempt.summary(),
                attempt.error,
                payload=attempt,
            )
            for attempt in attempts
        ],
        objective=f"samples/s at batch {THROUGHPUT_BATCH}",
        maximize=True,
        constraint=constraint,
    )
    summaries = [attempt.summary() for attempt in attempts] if len(attempts) > 1 else []
    if selection.chosen is None:
        log.warning("quantize (%s): %s", config.scheme, selection.reason)
        chosen = attempts[0] if len(attempts) == 1 else None
        return QuantizeResult(
            model=original,
            scheme=config.scheme,
            engine=None,
            reason=selection.reason,
            float_layers=list(weighted_layers(model)),
            unsupported_layers=[],
            fidelity=None,
            candidates=summaries,
            baseline_kept=True,
            target_met=False,
            sensitivity=chosen.sensitivity if chosen else [],
            search=chosen.search if chosen else [],
        )
    chosen = selection.chosen.payload
    if len(engines) > 1:
        reason = selection.reason
    elif config.engine != "auto":
        reason = f"engine '{config.engine}' was asked for" + (f"; it meets {constraint}" if constrained else "")
    else:
        reason = f"the only installed engine for {config.scheme} on this toolkit"
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


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    calibration: Iterable | None = None,
    *,
    validation: Iterable | None = None,
    finetune: Finetune | None = None,
    output_dir: str | Path | None = None,
) -> nn.Module:
    """Quantize ``model`` as ``config`` says and return a module that runs.

    ``calibration`` yields model inputs (or ``(inputs, targets)`` pairs);
    ``validation`` (with labels for classifiers) measures fidelity for
    ``engine: auto`` and mixed precision; ``finetune`` (a
    :class:`~optiforge.training.finetune.Finetune`, e.g. ``finetuner(data)``)
    trains the fake-quantized model for ``qat_int8``. When no candidate meets
    the target, the float model is returned unchanged.
    :func:`quantize_with_result` also says what was done (engine and why,
    layers kept float, fidelity) and exports the result to ONNX.

    >>> import torch, optiforge
    >>> model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> loader = [torch.randn(8, 16) for _ in range(4)]
    >>> quantized = optiforge.quantize(model, optiforge.QuantConfig(scheme="int8_static", engine="torch"),
    ...                                calibration=loader)
    >>> quantized(torch.randn(2, 16)).shape
    torch.Size([2, 4])
    """
    return quantize_with_result(
        model, config, calibration, validation=validation, finetune=finetune, output_dir=output_dir
    ).model
