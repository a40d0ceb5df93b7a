"""The CPU-time budget given to third-party graph analysis interrupts work that runs past it."""

from __future__ import annotations

import time

import pytest

from optiforge.bench.budget import BudgetSpent, CpuBudget


def _busy(seconds: float) -> None:
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass


def test_work_past_the_budget_is_interrupted_and_the_rest_is_shared_by_later_calls():
    budget = CpuBudget(0.05)
    started = time.process_time()
    with pytest.raises(BudgetSpent), budget.spending():
        _busy(2.0)
    assert time.process_time() - started < 1.0  # stopped near 0.05 s, long before the 2 s of work
    assert budget.left_seconds <= 0
    with pytest.raises(BudgetSpent), budget.spending():  # nothing left for a second analysis
        pass


def test_work_within_the_budget_runs_to_its_end():
    budget = CpuBudget(5.0)
    with budget.spending():
        _busy(0.02)
    assert 0 < budget.left_seconds < 5.0
