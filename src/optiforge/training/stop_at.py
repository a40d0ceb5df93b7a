"""``stop_at``: end training after the first validation pass whose metric reaches a target.

Passes come at the end of epochs and, with ``validation.every_epochs`` below
one, every that share of an epoch as well; a target reached mid-epoch ends
the epoch there, and its record's ``step`` says after which optimizer step.
The stop is decided from the history, which is part of the checkpoint, so a
resumed run knows it has already stopped and what it reached.
"""

from __future__ import annotations

from optiforge.errors import ConfigError, TrainingError
from optiforge.tasks import Task


class StopAt:
    """A target for one validation metric; ``metric`` names the task's primary one."""

    def __init__(self, target: dict[str, float], task: Task, has_validation: bool) -> None:
        ((name, self.target),) = target.items()
        self.metric = task.primary_metric if name == "metric" else name.removeprefix("val_")
        self.higher_is_better = (
            task.higher_is_better if self.metric == task.primary_metric else "loss" not in self.metric
        )
        if not has_validation:
            raise ConfigError(
                f"train.stop_at: {{{name}: {self.target}}} needs a validation split; set data.val_fraction > 0"
            )

    @property
    def key(self) -> str:
        return f"val_{self.metric}"

    def describe(self) -> str:
        return f"val {self.metric} {'>=' if self.higher_is_better else '<='} {self.target:g}"

    def reached(self, record: dict[str, float]) -> bool:
        if self.key not in record:
            if not any(key.startswith("val_") for key in record):
                return False  # no validation pass this epoch
            reported = ", ".join(key.removeprefix("val_") for key in record if key.startswith("val_"))
            raise TrainingError(f"train.stop_at: the task reports no metric '{self.metric}'; it reports: {reported}")
        value = record[self.key]
        return value >= self.target if self.higher_is_better else value <= self.target

    def summary(self, history: list[dict[str, float]]) -> dict:
        """What the report shows: the target, the epoch that reached it (or none) and the best value."""
        evaluated = [record for record in history if self.key in record]
        reached = next((record for record in evaluated if self.reached(record)), None)
        choose = max if self.higher_is_better else min
        best = choose(evaluated, key=lambda record: record[self.key]) if evaluated else None
        return {
            "stop_at": self.describe(),
            "stop_at_epoch": reached["epoch"] if reached else None,
            "stop_at_step": reached.get("step") if reached else None,
            f"best_{self.key}": best[self.key] if best else None,
            "best_epoch": best["epoch"] if best else None,
        }
