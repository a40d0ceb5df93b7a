"""The search: walk the candidate tree depth first, measure each candidate, keep the front.

A prefix shared by several candidates is applied once: the model after it is held while the walk is
below it (a copy per branch, since stages may change their input in place) and dropped once every
candidate under it is done. Each measured candidate's figures are written to the run folder at once,
so a resumed search skips it; a candidate whose stage fails is recorded with its error and the walk
goes on; the time budget stops the walk between candidates. Once chosen, only what may ship keeps its
files: the chosen candidate's folder (with ``keep: front``, every front point's); the figures stay, so a
resumed search that needs a removed model applies its stages again (:meth:`Search.rebuild`).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optiforge.bench.selection import Candidate, Selection, dominates, pareto_front, select
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError
from optiforge.files import atomic_save, atomic_write_text
from optiforge.search.config import SearchConfig
from optiforge.search.figures import OBJECTIVE_FIGURES, PREFERENCE_FIGURES, BaseMeasurer, Measurer
from optiforge.search.node_files import NodeFiles
from optiforge.search.space import CandidateSpec, ShortenStep, Step, prefix_key, shorten, shorten_step
from optiforge.tasks import Task
from optiforge.training.progress import progress_bar

log = logging.getLogger("optiforge")


@dataclass
class StepResult:
    """What applying one step gives: the model, the file it ships as (``None``: its state dict), report info."""

    model: Any
    artifact: Path | None = None
    info: dict = field(default_factory=dict)
    exports: dict = field(default_factory=dict)


# (model, step, folder for the step's files, key of the steps that made the model) -> StepResult; supplied by
# the caller (the stage module). Steps given the same key receive equal models, so they may share work.
ApplyStep = Callable[[Any, Step, Path, str], StepResult]
# baseline -> the measurer of every candidate against it (default: the task's metric on the validation split)
MakeMeasurer = Callable[[Any], BaseMeasurer]
SPEED_FIGURES = ("latency_ms", "throughput_per_s")


@dataclass
class Outcome:
    """One candidate's result: figures, or the error that stopped it, or why it was not run."""

    spec: CandidateSpec
    figures: dict = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None
    artifact: str | None = None
    phase: str = "full"
    model: Any = field(default=None, repr=False)
    exports: dict = field(default_factory=dict, repr=False)  # format -> writer of the last stage, as StageOutput's
    info: dict = field(default_factory=dict)  # the last stage's report info (layers kept float, engine, ...)

    def row(self) -> dict:
        row: dict[str, Any] = {"name": self.spec.name, "key": self.spec.key, "phase": self.phase}
        row["stages"] = [{step.kind: step.fields} for step in self.spec.steps]
        row.update(self.figures)
        row["artifact"] = self.artifact
        if self.info:
            row["info"] = self.info
        if self.error:
            row["error"] = self.error
        if self.skipped:
            row["skipped"] = self.skipped
        return row


@dataclass
class SearchResult:
    """Every candidate, the front, and the choice (``chosen`` is ``None`` when the baseline ships)."""

    baseline: dict
    outcomes: list[Outcome]
    front: list[str]
    selection: Selection
    chosen: Outcome | None
    invalid: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    applied_steps: int = 0

    @property
    def baseline_kept(self) -> bool:
        return self.chosen is None


class Search:
    """Measure ``specs`` against ``baseline`` and choose (see :class:`SearchConfig`).

    ``measurer`` replaces the task's measurer (the ``quantize`` verb measures fidelity on its own loaders);
    ``data`` and ``task`` are then unused.
    """

    def __init__(
        self,
        config: SearchConfig,
        data: TaskData | None,
        task: Task | None,
        apply_step: ApplyStep,
        folder: Path,
        *,
        resume: bool = False,
        progress: bool = True,
        save_artifact: Callable[[Any, Path], Path | None] | None = None,
        shorten: ShortenStep = shorten_step,
        measurer: MakeMeasurer | None = None,
    ) -> None:
        self.config, self.data, self.task, self.apply_step = config, data, task, apply_step
        self.make_measurer = measurer or self._task_measurer
        self.folder, self.resume, self.progress = folder, resume, progress
        self.save_artifact = save_artifact or _save_state_dict
        self.shorten_step = shorten
        self.applied_steps = 0
        self.deadline: float | None = None
        self.notes: list[str] = []
        self.files = NodeFiles(self.folder)  # folders under nodes/ that may ship

    def _task_measurer(self, baseline: Any) -> BaseMeasurer:
        if self.data is None or self.task is None:
            raise ValueError("Search: give data and task, or a measurer")
        return Measurer(baseline, self.data, self.task, self.config)

    # ---- the walk ----
    def _cache_path(self, spec: CandidateSpec, phase: str) -> Path:
        settings = f"{self.config.objective}-{self.config.timing_batch}"
        return self.folder / "candidates" / f"{spec.key}-{phase}-{settings}.json"

    def _load_cached(self, spec: CandidateSpec, phase: str) -> Outcome | None:
        path = self._cache_path(spec, phase)
        if not (self.resume and path.is_file()):
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # a damaged cache entry is measured again
        outcome = Outcome(spec, saved.get("figures", {}), saved.get("error"), None, saved.get("artifact"), phase)
        outcome.info = saved.get("info", {})
        return outcome

    def _store(self, outcome: Outcome) -> None:
        path = self._cache_path(outcome.spec, outcome.phase)
        saved = {"name": outcome.spec.name, "figures": outcome.figures, "error": outcome.error, "info": outcome.info}
        atomic_write_text(path, json.dumps(saved | {"artifact": outcome.artifact}, indent=1, default=str))

    def _out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _measure(self, node: StepResult, spec: CandidateSpec, phase: str) -> Outcome:
        model, artifact = node.model, node.artifact
        outcome = Outcome(spec, phase=phase, exports=node.exports, info=node.info)
        try:
            if artifact is None:
                artifact = self.save_artifact(model, self.folder / "nodes" / spec.key / "model.pt")
            outcome.artifact = str(artifact.relative_to(self.folder)) if artifact else None
            outcome.figures = self.measurer.figures(model, artifact, spec.name)
            outcome.figures["metric_drop"] = self.measurer.metric_drop(outcome.figures["value"])
            outcome.model = model
        except ConfigError as error:
            outcome.error = str(error)
        except Exception as error:  # a candidate that cannot be measured is recorded, the search goes on
            outcome.error = f"measuring failed: {type(error).__name__}: {error}"
        self._store(outcome)
        return outcome

    def _walk(self, node: StepResult, depth: int, specs: list[CandidateSpec], phase: str, done: Callable) -> None:
        model = node.model
        children: dict[str, list[CandidateSpec]] = {}
        ends_here = False
        for spec in specs:
            if len(spec.steps) == depth:
                done(self._measure(node, spec, phase) if not self._out_of_time() else _budget(spec, phase))
                ends_here = True
            else:
                children.setdefault(spec.steps[depth].key, []).append(spec)
        for index, group in enumerate(children.values()):
            if self._out_of_time():
                for spec in group:
                    done(_budget(spec, phase))
                continue
            step = group[0].steps[depth]
            # the last branch may take its parent's model, unless the parent is the caller's (the root) or a
            # measured candidate's (which may ship): stages may change their input in place
            last = index == len(children) - 1 and depth > 0 and not ends_here
            try:
                branch = model if last else copy.deepcopy(model)
                folder = self.folder / "nodes" / prefix_key(group[0].steps[: depth + 1])
                result = self.apply_step(branch, step, folder, prefix_key(group[0].steps[:depth]))
                self.applied_steps += 1
            except KeyboardInterrupt:
                raise
            except Exception as error:  # the stage failed: every candidate below it is recorded failed
                message = f"stage {step.label} failed: {type(error).__name__}: {error}"
                log.warning("search: %s", message)
                for spec in group:
                    failed = Outcome(spec, error=message, phase=phase)
                    self._store(failed)
                    done(failed)
                continue
            self._walk(result, depth + 1, group, phase, done)

    def _phase(
        self, specs: Sequence[CandidateSpec], phase: str, baseline: Any, bar: Any, task_id: Any
    ) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {}
        todo = []
        for spec in specs:
            cached = self._load_cached(spec, phase)
            if cached is not None:
                outcomes[spec.key] = cached
            else:
                todo.append(spec)
        if len(todo) < len(specs):
            self.notes.append(f"{phase}: {len(specs) - len(todo)} candidate(s) read from an earlier run")
        bar.update(task_id, advance=len(specs) - len(todo))

        def done(outcome: Outcome) -> None:
            outcomes[outcome.spec.key] = outcome
            self._keep_front_models(outcomes)
            bar.update(task_id, advance=1, info=self._front_text(outcomes.values()))

        if todo:
            self._walk(StepResult(baseline), 0, todo, phase, done)
        return [outcomes[spec.key] for spec in specs]

    # ---- the front ----
    def _keys(self) -> list[tuple[str, bool]]:
        figure, maximize, _ = OBJECTIVE_FIGURES[self.config.objective]
        return [("value", self.measurer.higher_is_better), (figure, maximize)]

    def _candidates(self, outcomes: Sequence[Outcome]) -> list[Candidate]:
        figure, _, _ = self._preference()
        return [
            Candidate(
                outcome.spec.name,
                objective=outcome.figures.get(figure),
                accepted=outcome.phase == "full" and self.measurer.accepted(outcome.figures),
                figures=outcome.figures,
                error=outcome.error or outcome.skipped,
                payload=outcome,
            )
            for outcome in outcomes
        ]

    def _preference(self) -> tuple[str, bool, str]:
        if self.config.prefer == "smallest":
            return PREFERENCE_FIGURES["smallest"]
        if self.config.prefer == "fastest" and self.config.objective not in ("latency", "throughput"):
            return OBJECTIVE_FIGURES["latency"]
        return OBJECTIVE_FIGURES[self.config.objective]

    def _front(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        final = [outcome for outcome in outcomes if outcome.phase == "full"]
        return [candidate.payload for candidate in pareto_front(self._candidates(final), self._keys())]

    def _keep_front_models(self, outcomes: dict[str, Outcome]) -> None:
        front = {id(outcome) for outcome in self._front(list(outcomes.values()))}
        for outcome in outcomes.values():
            if id(outcome) not in front:
                outcome.model = None  # only front points may ship; the rest need no memory

    def _front_text(self, outcomes: Sequence[Outcome]) -> str:
        figure, _, _ = OBJECTIVE_FIGURES[self.config.objective]
        points = [f"{o.figures['value']:.4g}@{o.figures[figure]:.3g}" for o in self._front(list(outcomes))]
        return "front: " + (" ".join(points[:6]) or "-")

    # ---- successive halving ----
    def _promoted(self, proxies: Sequence[Outcome]) -> set[str]:
        """Keys of proxy-measured candidates that, with the metric slack, could reach the front."""
        slack = self.config.effort.proxy.metric_slack if self.config.effort.proxy else 0.0
        sign = 1.0 if self.measurer.higher_is_better else -1.0
        measured = [o for o in proxies if o.error is None and o.skipped is None and o.figures]
        keys = self._keys()
        promoted = set()
        for outcome in measured:
            hopeful = dict(outcome.figures, value=outcome.figures["value"] + sign * slack)
            beaten = any(dominates(other.figures, hopeful, keys) for other in measured if other is not outcome)
            reachable = self.measurer.accepted(
                hopeful
                | {
                    figure: min(1.0, (hopeful.get(figure) or 0.0) + slack)
                    for figure in ("fidelity", "neighbours_kept")
                    if figure in hopeful
                }
            )
            if not beaten and reachable:
                promoted.add(outcome.spec.key)
        return promoted

    def _search(self, specs: list[CandidateSpec], baseline: Any, bar: Any, task_id: Any) -> list[Outcome]:
        if self.config.effort.proxy is None:
            return self._phase(specs, "full", baseline, bar, task_id)
        shortened = {spec.key: shorten(spec, self.config.effort.proxy.fraction, self.shorten_step) for spec in specs}
        # a candidate without fine-tuning is its own proxy: measured once, in full
        exact = [spec for spec in specs if shortened[spec.key].key == spec.key]
        proxies = self._phase([shortened[s.key] for s in specs if s not in exact], "proxy", baseline, bar, task_id)
        promoted = self._promoted(proxies)
        full = [spec for spec in specs if spec in exact or shortened[spec.key].key in promoted]
        bar.update(task_id, total=len(specs) + len(full) - len(exact))
        outcomes = self._phase(full, "full", baseline, bar, task_id)
        outcomes += [outcome for outcome in proxies if outcome.spec.key not in promoted]
        if proxies:
            self.notes.append(
                f"successive halving: {len(proxies)} candidate(s) fine-tuned as a short proxy, "
                f"{len(full) - len(exact)} of them then in full"
            )
        return outcomes

    # ---- the whole search ----
    def run(self, baseline: Any, specs: Sequence[CandidateSpec], invalid: Sequence[dict] = ()) -> SearchResult:
        if not specs:
            raise ConfigError("search: the space is empty; give at least one candidate")
        started = time.monotonic()
        self.measurer = self.make_measurer(baseline)
        baseline_figures = self.measurer.figures(
            baseline, self.save_artifact(baseline, self.folder / "baseline.pt"), "the baseline"
        )
        self.measurer.baseline_figures = baseline_figures
        baseline_figures["metric_drop"] = 0.0
        one_measurement = time.monotonic() - started
        outcomes: list[Outcome] = []
        budget_refused = False
        if self.config.effort.budget_minutes is not None:
            budget = self.config.effort.budget_minutes * 60.0
            self.deadline = started + budget
            if budget < 2 * one_measurement:
                self.notes.append(
                    f"effort.budget_minutes={self.config.effort.budget_minutes:g} is too small for even one candidate "
                    f"(measuring the baseline alone took {one_measurement:.1f} s, a candidate takes at least that "
                    "plus its stages); the baseline is kept"
                )
                outcomes = [_budget(spec, "full") for spec in specs]
                budget_refused = True
        if not outcomes:
            with progress_bar(self.progress) as bar:
                task_id = bar.add_task("search", total=len(specs), info="")
                outcomes = self._search(list(specs), baseline, bar, task_id)
        skipped = [o for o in outcomes if o.skipped]
        if skipped and len(skipped) < len(outcomes):
            self.notes.append(f"the budget ran out: {len(skipped)} candidate(s) not measured")
        front = self._front(outcomes)
        figure, maximize, label = self._preference()
        if figure in SPEED_FIGURES:
            label = f"{label} at batch {self.config.timing_batch}"
        selection = select(
            self._candidates(outcomes),
            objective=label,
            maximize=maximize,
            constraint=self.measurer.constraint_text(),
        )
        if skipped and len(skipped) == len(outcomes) and not budget_refused:
            self.notes.append("the budget ran out before any candidate was measured; the baseline is kept")
        chosen = selection.chosen.payload if selection.chosen else None
        shipped = [chosen] if chosen else []
        if self.config.keep == "front":
            shipped += [outcome for outcome in front if outcome is not chosen]
        self._keep_only(shipped, outcomes, baseline_ships=chosen is None)
        return SearchResult(
            baseline=baseline_figures,
            outcomes=outcomes,
            front=[o.spec.name for o in front],
            selection=selection,
            chosen=chosen,
            invalid=list(invalid),
            notes=self.notes,
            seconds=time.monotonic() - started,
            applied_steps=self.applied_steps,
        )

    def rebuild(self, outcome: Outcome, baseline: Any) -> Any:
        """The model of ``outcome`` (read from an earlier run, or not kept): its stages applied again, its
        artefact written again where it was."""
        node = StepResult(copy.deepcopy(baseline))
        steps = outcome.spec.steps
        for depth, step in enumerate(steps):
            folder = self.folder / "nodes" / prefix_key(steps[: depth + 1])
            node = self.apply_step(node.model, step, folder, prefix_key(steps[:depth]))
        artifact = node.artifact
        if artifact is None:
            artifact = self.save_artifact(node.model, self.folder / "nodes" / outcome.spec.key / "model.pt")
        outcome.artifact = str(artifact.relative_to(self.folder)) if artifact else None
        outcome.exports = node.exports
        if self.files.choosing_done:
            self.files.keep(outcome.spec.key, outcome.artifact)
            self.files.remove_unkept()  # the prefixes applied on the way do not ship
        return node.model

    # ---- what stays on disk ----
    def _keep_only(self, shipped: Sequence[Outcome], outcomes: Sequence[Outcome], baseline_ships: bool) -> None:
        """Remove the files of every candidate that does not ship (``shipped``); their figures stay."""
        self.files.kept = set()
        for outcome in shipped:
            self.files.keep(outcome.spec.key, outcome.artifact)
        shipping = {id(outcome) for outcome in shipped}
        for outcome in outcomes:
            if id(outcome) not in shipping:
                outcome.model = None  # its files go: a model running from them would break
                outcome.artifact = None
        self.files.remove_unkept()
        if not baseline_ships:
            (self.folder / "baseline.pt").unlink(missing_ok=True)


def _budget(spec: CandidateSpec, phase: str) -> Outcome:
    return Outcome(spec, skipped="not measured: the time budget ran out", phase=phase)


def _save_state_dict(model: Any, path: Path) -> Path | None:
    from torch import nn

    return atomic_save(model.state_dict(), path) if isinstance(model, nn.Module) else None
