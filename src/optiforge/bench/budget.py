"""A CPU-time budget for third-party graph analysis that can run for hours on some graphs.

Structured pruning and ``shrink`` give Torch-Pruning one. Torch-Pruning follows every
reshape channel by channel; on graphs that fold spatial positions into channels and back
(timm's EfficientViT windows its attention) its index lists grow with channels × positions
and one analysis runs for tens of minutes. CPU time (not wall time) is counted, so a busy
machine does not change the outcome much.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class BudgetSpent(BaseException):
    """Raised inside the analysis when its CPU seconds are spent (a BaseException: no ``except Exception`` eats it)."""


class CpuBudget:
    """CPU seconds shared by every analysis of one call; :meth:`spending` raises :class:`BudgetSpent` past them.

    Only the main thread can be interrupted (a signal handler runs there); elsewhere the budget is not enforced.

    >>> budget = CpuBudget(5.0)
    >>> with budget.spending():
    ...     _ = sum(range(1000))
    >>> 0 < budget.left_seconds <= 5.0
    True
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.left_seconds = seconds

    @contextmanager
    def spending(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
            yield
            return
        if self.left_seconds <= 0:
            raise BudgetSpent()

        def spent(_signal: int, _frame: object) -> None:
            raise BudgetSpent()

        started = time.process_time()
        previous = signal.signal(signal.SIGPROF, spent)
        # fires again every second in case the first is caught by code that catches everything
        signal.setitimer(signal.ITIMER_PROF, self.left_seconds, 1.0)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            signal.signal(signal.SIGPROF, previous)
            self.left_seconds -= time.process_time() - started
