"""Stage ``search``: candidate sequences of ordinary stages, measured, the front kept, one shipped.

The search itself (:mod:`optiforge.search`) knows no stage kind; this module hands it the registry's:
parsing a candidate's stage config and applying a stage in its own folder under the search's folder.
Figures of the candidates are on the validation split; with ``keep: front`` every front point is also
measured on the test split and gets its own report row (``stage: "search: <candidate>"``, ``front_of``),
placed before the search's own row, which stays the last: the model that ships.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError, model_validator
from torch import nn

from optiforge.bench.measure import measure
from optiforge.config import describe_validation_error
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError, OptiforgeError
from optiforge.search import Search, SearchConfig, SearchResult, Step, StepResult, expand_space, write_search
from optiforge.search.space import CandidateSpec, IncompatibleFields, shorten_step
from optiforge.stages.base import STAGES, StageContext, StageOutput, register_stage


def parse_step(kind: str, fields: Any, where: str) -> BaseModel:
    """A candidate's stage: its kind's config, validated as a recipe stage is."""
    if kind == "search":
        raise ConfigError(f"{where}: a search cannot be a stage of a search candidate")
    stage = STAGES.get(kind, field=where)
    try:
        return stage.config.model_validate(fields or {})
    except ValidationError as error:
        message = describe_validation_error(error, stage.config, where)
        if all(not detail["loc"] for detail in error.errors()):  # only the config's own cross-field check
            raise IncompatibleFields(message) from None
        raise ConfigError(message) from None


def proxy_step(step: Step, fraction: float) -> Step:
    """The step a successive-halving proxy runs: its fine-tuning shortened. ``quantize`` trains only for
    ``qat_int8`` (its ``finetune`` is ignored otherwise), so other schemes stay as they are."""
    if step.kind == "quantize" and getattr(step.config, "scheme", None) != "qat_int8":
        return step
    return shorten_step(step, fraction)


def candidates_of(config: SearchConfig) -> tuple[list[CandidateSpec], list[dict]]:
    """The space's candidates, and the combinations a stage refused (listed in ``search.json``)."""
    return expand_space(config.candidates, config.stages, config.options, parse_step)


class SearchStageConfig(SearchConfig):
    """The ``search:`` stage: a :class:`~optiforge.search.SearchConfig` whose candidates' stages are checked."""

    @model_validator(mode="after")
    def _candidates_run(self) -> SearchStageConfig:
        try:
            specs, _ = candidates_of(self)
        except OptiforgeError as error:
            raise ValueError(str(error)) from None
        if self.objective == "memory":
            for spec in specs:
                for step in spec.steps:
                    if getattr(step.config, "engine", None) == "onnxruntime" or step.kind == "encoder_runtime":
                        raise ValueError(
                            f"objective memory cannot be measured for '{spec.name}': ONNX Runtime allocates its own "
                            "memory, which PyTorch's peak does not see; choose latency, throughput or size, "
                            "or leave the onnxruntime candidates out"
                        )
        return self


def check_search(model: nn.Module, config: SearchStageConfig, data: TaskData) -> None:
    """The first stage of every candidate is checked against the model (later ones see a changed model)."""
    specs, _ = candidates_of(config)
    for spec in specs:
        if spec.steps and STAGES.get(spec.steps[0].kind).check is not None:
            STAGES.get(spec.steps[0].kind).check(model, spec.steps[0].config, data)


def _applier(ctx: StageContext):  # noqa: ANN202
    shared: dict = {}  # one search's shared work (a layer ranking used by every k)

    def apply_step(model: Any, step: Step, folder: Path, input_key: str) -> StepResult:
        step_ctx = dataclasses.replace(ctx, stage_dir=folder, progress=False, input_key=input_key, shared=shared)
        result = STAGES.get(step.kind).apply(model, step.config, step_ctx)
        output = result if isinstance(result, StageOutput) else StageOutput(result)
        return StepResult(output.model, output.artifact, output.info, output.exports)

    return apply_step


def run_search(model: nn.Module, config: SearchConfig, ctx: StageContext) -> tuple[SearchResult, StageOutput]:
    """Search from ``model`` into ``ctx.stage_dir``: ``search.json``, ``search.png``, and the shipped model."""
    specs, invalid = candidates_of(config)
    search = Search(
        config,
        ctx.data,
        ctx.task,
        _applier(ctx),
        ctx.stage_dir,
        resume=ctx.resume,
        progress=ctx.progress,
        shorten=proxy_step,
    )
    result = search.run(model, specs, invalid)
    front_rows = _front_rows(search, result, model, config, ctx) if config.keep == "front" else []
    search_json, plot = write_search(result, config, ctx.stage_dir)
    info: dict[str, Any] = {
        "chosen": result.chosen.spec.name if result.chosen else "baseline",
        "baseline_kept": result.baseline_kept,
        "reason": result.selection.reason,
        "notes": result.notes,
        "front": result.front,
        "candidates": len(result.outcomes),
        "search": str(search_json.relative_to(ctx.run_dir)),
    }
    if plot is not None:
        info["search_plot"] = str(plot.relative_to(ctx.run_dir))
    if result.chosen is None:
        return result, StageOutput(model, info=info, rows=front_rows)
    chosen = result.chosen.model if result.chosen.model is not None else search.rebuild(result.chosen, model)
    artifact = ctx.stage_dir / result.chosen.artifact if result.chosen.artifact else None
    return result, StageOutput(chosen, artifact=artifact, info=info, exports=result.chosen.exports, rows=front_rows)


def _front_rows(search: Search, result: SearchResult, model: Any, config: SearchConfig, ctx: StageContext) -> list:
    """One report row per front point: measured on the test split as every stage's row is, its artefact kept."""
    rows = []
    for outcome in result.outcomes:
        if outcome.spec.name in result.front and outcome.phase == "full":
            started = time.perf_counter()
            built = outcome.model if outcome.model is not None else search.rebuild(outcome, model)
            artifact = ctx.stage_dir / outcome.artifact if outcome.artifact else None
            figures = measure(built, ctx.data, artifact=artifact, config=config.timing.measure, task=ctx.task)
            rows.append(
                {
                    "stage": f"{ctx.stage_dir.name}: {outcome.spec.name}",
                    **figures.as_dict(),
                    "seconds": time.perf_counter() - started,  # measuring it (its stages ran in the search)
                    "artifact": str(artifact.relative_to(ctx.run_dir)) if artifact else None,
                    "front_of": ctx.stage_dir.name,
                    "chosen": outcome is result.chosen,
                    "validation": {key: outcome.figures.get(key) for key in ("value", "fidelity", "speedup")},
                }
            )
    return rows


@register_stage(
    "search",
    SearchStageConfig,
    "measure candidate sequences of stages on the validation split, keep the Pareto front, ship the best "
    "candidate meeting the constraint (else the baseline)",
    check=check_search,
)
def search_stage(model: nn.Module, config: SearchStageConfig, ctx: StageContext) -> StageOutput:
    return run_search(model, config, ctx)[1]


# tasks whose targets are a pretrained model's own outputs, and the family of default space they get
FAMILY_OF_TASK = {"embedding": "encoder", "logit_fidelity": "pretrained"}


def model_family(data: TaskData) -> str:
    """``encoder`` for sentence-embedding data, ``pretrained`` for a network judged by fidelity to its own
    logits, else ``classifier`` (the families with a default space)."""
    return FAMILY_OF_TASK.get(data.task, "classifier")


def default_search(
    family: str,
    objective: str = "latency",
    *,
    max_metric_drop: float | None = 0.01,
    min_fidelity: float | None = None,
    batch: int | None = None,
    budget_minutes: float | None = None,
    keep: str = "chosen",
    finetune_epochs: int = 2,
) -> SearchStageConfig:
    """The search ``optiforge optimize`` runs: the family's default space, halving on, the user's constraint."""
    from optiforge.search.defaults import default_space

    space = default_space(family, objective, finetune_epochs=finetune_epochs)
    return SearchStageConfig(
        **space,
        objective=objective,
        constraint={"max_metric_drop": max_metric_drop, "min_fidelity": min_fidelity},
        timing={"batch": batch},
        effort={"budget_minutes": budget_minutes, "proxy": {"fraction": 0.5}},
        keep=keep,
    )


@dataclasses.dataclass
class OptimizeResult:
    """The shipped model (the baseline when nothing met the constraint), the search, and its folder."""

    model: nn.Module | Any
    search: SearchResult
    folder: Path
    artifact: Path | None

    @property
    def baseline_kept(self) -> bool:
        return self.search.baseline_kept


def optimize(
    model: nn.Module,
    data: TaskData,
    *,
    objective: str = "latency",
    max_metric_drop: float | None = 0.01,
    min_fidelity: float | None = None,
    batch: int | None = None,
    budget_minutes: float | None = None,
    search: SearchConfig | dict | None = None,
    train: Any = None,
    out: str | Path = "runs/optimize",
    resume: bool = False,
    progress: bool = True,
) -> OptimizeResult:
    """Search the default space of ``model``'s family (or ``search``) and return the best model meeting the
    constraint; ``search.json`` and ``search.png`` go to ``out/search``.

    ``train`` (a :class:`~optiforge.TrainConfig`) sets the fine-tuning inside the space (learning rate,
    batch size); ``search`` replaces the default space and settings.

    >>> import optiforge
    >>> data = optiforge.build_data(optiforge.DataConfig(name="digits"))
    >>> model = optiforge.build_model(optiforge.ModelConfig(name="mlp", hidden=[16]), data)
    >>> result = optiforge.optimize(model, data, search={"options": {"quantize.scheme": ["bf16"]}},
    ...                             out="/tmp/of-optimize-doc", progress=False)
    >>> sorted(path.name for path in result.folder.glob("search.*"))
    ['search.json', 'search.png']
    """
    from optiforge.config import HardwareConfig, TrainConfig
    from optiforge.tasks import task_for

    if search is None:
        config: SearchConfig = default_search(
            model_family(data),
            objective,
            max_metric_drop=max_metric_drop,
            min_fidelity=min_fidelity,
            batch=batch,
            budget_minutes=budget_minutes,
        )
    else:
        fields = search.model_dump() if isinstance(search, BaseModel) else dict(search)
        config = SearchStageConfig(**fields)
    run_dir = Path(out)
    ctx = StageContext(
        data=data,
        task=task_for(data.task),
        hardware=HardwareConfig(),
        train_config=train or TrainConfig(),
        stage_dir=run_dir / "search",
        run_dir=run_dir,
        resume=resume,
        progress=progress,
    )
    result, output = run_search(model, config, ctx)
    return OptimizeResult(output.model, result, ctx.stage_dir, output.artifact)
