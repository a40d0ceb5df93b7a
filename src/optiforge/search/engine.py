"""The search: measure every candidate against the baseline, keep the front, and choose.

The candidates are applied and measured by the walk over their prefix tree (:mod:`optiforge.search.walk`),
with successive halving first when a proxy is set (:mod:`optiforge.search.halving`); the time budget, or
``effort.stop_at_first_accepted`` once a candidate meets the constraint, stops the walk between candidates.
Once chosen, only what may ship keeps its files: the chosen candidate's folder (with ``keep: front``, every
front point's); the figures stay, so a resumed search that needs a removed model applies its stages again
(:meth:`Search.rebuild`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optiforge.bench.selection import Candidate, Selection, pareto_front, select
from optiforge.data.builtin import TaskData
from optiforge.errors import ConfigError
from optiforge.files import atomic_save
from optiforge.search.config import SearchConfig
from optiforge.search.figures import OBJECTIVE_FIGURES, PREFERENCE_FIGURES, BaseMeasurer, Measurer
from optiforge.search.halving import promoted
from optiforge.search.node_files import NodeFiles
from optiforge.search.space import CandidateSpec, ShortenStep, prefix_key, shorten, shorten_step
from optiforge.search.walk import ApplyStep, Outcome, SaveArtifact, StepResult, TreeWalk
from optiforge.tasks import Task
from optiforge.training.progress import progress_bar

# baseline -> the measurer of every candidate against it (default: the task's metric on the validation split)
MakeMeasurer = Callable[[Any], BaseMeasurer]
SPEED_FIGURES = ("latency_ms", "throughput_per_s")
OUT_OF_TIME = "not measured: the time budget ran out"


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
        save_artifact: SaveArtifact | None = None,
        shorten: ShortenStep = shorten_step,
        measurer: MakeMeasurer | None = None,
    ) -> None:
        self.config, self.data, self.task, self.apply_step = config, data, task, apply_step
        self.make_measurer = measurer or self._task_measurer
        self.folder, self.resume, self.progress = folder, resume, progress
        self.save_artifact = save_artifact or _save_state_dict
        self.shorten_step = shorten
        self.deadline: float | None = None
        self.first_accepted: Outcome | None = None  # with effort.stop_at_first_accepted: the walk stops at it
        self.notes: list[str] = []
        self.files = NodeFiles(self.folder)  # folders under nodes/ that may ship

    def _task_measurer(self, baseline: Any) -> BaseMeasurer:
        if self.data is None or self.task is None:
            raise ValueError("Search: give data and task, or a measurer")
        return Measurer(baseline, self.data, self.task, self.config)

    # ---- the walk ----
    def _stop(self) -> str | None:
        if self.first_accepted is not None:
            return f"not measured: {self.first_accepted.spec.name}, earlier in order, met the constraint"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return OUT_OF_TIME
        return None

    def _note_accepted(self, outcome: Outcome) -> None:
        if self.config.effort.stop_at_first_accepted and self.first_accepted is None and self._accepted(outcome):
            self.first_accepted = outcome

    def _phase(
        self, specs: Sequence[CandidateSpec], phase: str, baseline: Any, bar: Any, task_id: Any
    ) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {}
        todo = []
        for spec in specs:
            cached = self.walker.cached(spec, phase)
            if cached is not None:
                outcomes[spec.key] = cached
                self._note_accepted(cached)
            else:
                todo.append(spec)
        if len(todo) < len(specs):
            self.notes.append(f"{phase}: {len(specs) - len(todo)} candidate(s) read from an earlier run")
        bar.update(task_id, advance=len(specs) - len(todo))

        def done(outcome: Outcome) -> None:
            outcomes[outcome.spec.key] = outcome
            self._note_accepted(outcome)
            self._keep_front_models(outcomes)
            bar.update(task_id, advance=1, info=self._front_text(outcomes.values()))

        if todo:
            self.walker.walk(StepResult(baseline), 0, todo, phase, done)
        return [outcomes[spec.key] for spec in specs]

    # ---- the front ----
    def _keys(self) -> list[tuple[str, bool]]:
        figure, maximize, _ = self.measurer.objective
        return [("value", self.measurer.higher_is_better), (figure, maximize)]

    def _candidates(self, outcomes: Sequence[Outcome]) -> list[Candidate]:
        figure, _, _ = self._preference()
        return [
            Candidate(
                outcome.spec.name,
                objective=outcome.figures.get(figure),
                accepted=self._accepted(outcome),
                figures=outcome.figures,
                error=outcome.error or outcome.skipped,
                payload=outcome,
            )
            for outcome in outcomes
        ]

    def _accepted(self, outcome: Outcome) -> bool:
        measured = outcome.error is None and outcome.skipped is None and bool(outcome.figures)
        return measured and outcome.phase == "full" and self.measurer.accepted(outcome.figures)

    def _preference(self) -> tuple[str, bool, str]:
        if self.config.prefer == "smallest":
            return PREFERENCE_FIGURES["smallest"]
        if self.config.prefer == "fastest" and self.config.objective not in ("latency", "throughput"):
            return OBJECTIVE_FIGURES["latency"]
        return self.measurer.objective

    def _front(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        final = [outcome for outcome in outcomes if outcome.phase == "full"]
        return [candidate.payload for candidate in pareto_front(self._candidates(final), self._keys())]

    def _keep_front_models(self, outcomes: dict[str, Outcome]) -> None:
        front = {id(outcome) for outcome in self._front(list(outcomes.values()))}
        for outcome in outcomes.values():
            if id(outcome) not in front:
                outcome.model = None  # only front points may ship; the rest need no memory

    def _front_text(self, outcomes: Sequence[Outcome]) -> str:
        figure, _, _ = self.measurer.objective
        points = [f"{o.figures['value']:.4g}@{o.figures[figure]:.3g}" for o in self._front(list(outcomes))]
        return "front: " + (" ".join(points[:6]) or "-")

    # ---- successive halving ----
    def _search(self, specs: list[CandidateSpec], baseline: Any, bar: Any, task_id: Any) -> list[Outcome]:
        if self.config.effort.proxy is None:
            return self._phase(specs, "full", baseline, bar, task_id)
        shortened = {spec.key: shorten(spec, self.config.effort.proxy.fraction, self.shorten_step) for spec in specs}
        # a candidate without fine-tuning is its own proxy: measured once, in full
        exact = [spec for spec in specs if shortened[spec.key].key == spec.key]
        proxies = self._phase([shortened[s.key] for s in specs if s not in exact], "proxy", baseline, bar, task_id)
        slack = self.config.effort.proxy.metric_slack
        promotions = promoted(proxies, self.measurer, self._keys(), slack)
        full = [spec for spec in specs if spec in exact or shortened[spec.key].key in promotions]
        bar.update(task_id, total=len(specs) + len(full) - len(exact))
        outcomes = self._phase(full, "full", baseline, bar, task_id)
        outcomes += [outcome for outcome in proxies if outcome.spec.key not in promotions]
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
        self.walker = TreeWalk(
            self.config,
            self.apply_step,
            self.folder,
            self.measurer,
            self.save_artifact,
            resume=self.resume,
            stop=self._stop,
        )
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
                outcomes = [Outcome(spec, skipped=OUT_OF_TIME) for spec in specs]
                budget_refused = True
        if not outcomes:
            with progress_bar(self.progress) as bar:
                task_id = bar.add_task("search", total=len(specs), info="")
                outcomes = self._search(list(specs), baseline, bar, task_id)
        skipped = [o for o in outcomes if o.skipped == OUT_OF_TIME]
        if skipped and len(skipped) < len(outcomes):
            self.notes.append(f"the budget ran out: {len(skipped)} candidate(s) not measured")
        if self.first_accepted is not None:
            later = sum(1 for o in outcomes if o.skipped and o.skipped != OUT_OF_TIME)
            name = self.first_accepted.spec.name
            self.notes.append(f"{name} met the constraint: {later} later candidate(s) not built")
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
            applied_steps=self.walker.applied_steps,
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


def _save_state_dict(model: Any, path: Path) -> Path | None:
    from torch import nn

    return atomic_save(model.state_dict(), path) if isinstance(model, nn.Module) else None
