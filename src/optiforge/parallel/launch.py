"""Strategy lookup by the recipe's ``parallel.strategy``."""

from __future__ import annotations

from collections.abc import Callable

from optiforge.config import ParallelConfig
from optiforge.errors import ConfigError
from optiforge.parallel.strategy import SingleProcess, Strategy
from optiforge.registry import Registry

STRATEGIES: Registry[Callable[[ParallelConfig], Strategy]] = Registry("parallel strategy")
STRATEGIES.add("none", lambda config: SingleProcess())


def strategy_for(config: ParallelConfig) -> Strategy:
    if config.strategy not in STRATEGIES:
        raise ConfigError(f"parallel.strategy: '{config.strategy}' is not available in this build")
    return STRATEGIES.get(config.strategy)(config)
