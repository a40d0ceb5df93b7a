"""The walk over the candidate tree: each prefix applied once, each candidate measured and its figures stored.

A prefix shared by several candidates is applied once: the model after it is held while the walk is
below it (a copy per branch, since stages may change their input in place) and dropped once every
candidate under it is done. Each measured candidate's figures are written to the run folder at once,
so a resumed search skips it; a candidate whose stage fails is recorded with its error and the walk
goes on. Between candidates the walk asks whether to go on (:attr:`TreeWalk.stop`: the time budget, or
a candidate already accepted); the candidates it does not reach are recorded with why.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optiforge.errors import ConfigError
from optiforge.files import atomic_write_text
from optiforge.search.config import SearchConfig
from optiforge.search.figures import BaseMeasurer
from optiforge.search.space import CandidateSpec, Step, prefix_key

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
# (model, path) -> the file the model was saved as (``None``: nothing written)
SaveArtifact = Callable[[Any, Path], Path | None]


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


class TreeWalk:
    """Apply and measure one phase's candidates depth first over their shared prefixes.

    ``stop`` is asked before each candidate or branch: the reason the rest are not run, or ``None`` to go on.
    """

    def __init__(
        self,
        config: SearchConfig,
        apply_step: ApplyStep,
        folder: Path,
        measurer: BaseMeasurer,
        save_artifact: SaveArtifact,
        *,
        resume: bool,
        stop: Callable[[], str | None],
    ) -> None:
        self.config, self.apply_step, self.folder, self.measurer = config, apply_step, folder, measurer
        self.save_artifact, self.resume, self.stop = save_artifact, resume, stop
        self.applied_steps = 0

    # ---- figures on disk ----
    def _cache_path(self, spec: CandidateSpec, phase: str) -> Path:
        settings = f"{self.config.objective}-{self.config.timing_batch}"
        return self.folder / "candidates" / f"{spec.key}-{phase}-{settings}.json"

    def cached(self, spec: CandidateSpec, phase: str) -> Outcome | None:
        """The outcome an earlier run stored for ``spec`` (only when resuming)."""
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

    # ---- one candidate ----
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

    # ---- the tree ----
    def walk(self, node: StepResult, depth: int, specs: list[CandidateSpec], phase: str, done: Callable) -> None:
        """Measure every candidate of ``specs`` (whose first ``depth`` steps made ``node``), calling ``done``
        with each outcome."""
        model = node.model
        children: dict[str, list[CandidateSpec]] = {}
        ends_here = False
        for spec in specs:
            if len(spec.steps) == depth:
                why_not = self.stop()
                skipped = Outcome(spec, skipped=why_not, phase=phase)
                done(self._measure(node, spec, phase) if why_not is None else skipped)
                ends_here = True
            else:
                children.setdefault(spec.steps[depth].key, []).append(spec)
        for index, group in enumerate(children.values()):
            why_not = self.stop()
            if why_not is not None:
                for spec in group:
                    done(Outcome(spec, skipped=why_not, phase=phase))
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
            self.walk(result, depth + 1, group, phase, done)
