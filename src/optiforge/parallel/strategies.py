"""Strategy lookup by the recipe's ``parallel.strategy`` (the launcher is :mod:`optiforge.launch`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from optiforge.config import ParallelConfig
from optiforge.errors import ConfigError
from optiforge.parallel.strategy import SingleProcess, Strategy
from optiforge.registry import Registry

log = logging.getLogger("optiforge")

STRATEGIES: Registry[Callable[[ParallelConfig], Strategy]] = Registry("parallel strategy")
STRATEGIES.add("none", lambda config: SingleProcess())


def _ddp(config: ParallelConfig) -> Strategy:
    from optiforge.parallel.data_parallel import DataParallel

    return DataParallel(config)


def _fsdp(config: ParallelConfig) -> Strategy:
    from optiforge.parallel.sharded import FullyShardedDataParallel

    return FullyShardedDataParallel(config)


def _pipeline(config: ParallelConfig) -> Strategy:
    from optiforge.parallel.pipeline import Pipeline

    return Pipeline(config)


def _tensor(config: ParallelConfig) -> Strategy:
    from optiforge.parallel.tensor import TensorParallel

    return TensorParallel(config)


def _hybrid(config: ParallelConfig) -> Strategy:
    if config.hybrid.inner == "pipeline":
        from optiforge.parallel.pipeline import Pipeline
        from optiforge.parallel.process_group import world_size_from_env
        from optiforge.parallel.sharded import hybrid_mesh_shape

        rows, _ = hybrid_mesh_shape(config, world_size_from_env())
        strategy = Pipeline(config, rows=rows)
        strategy.name = "hybrid"
        return strategy
    if config.hybrid.inner == "tensor":
        from optiforge.parallel.tensor import HybridTensor

        return HybridTensor(config)
    from optiforge.parallel.sharded import HybridSharded

    return HybridSharded(config)


for _name, _factory in (
    ("ddp", _ddp),
    ("fsdp", _fsdp),
    ("pipeline", _pipeline),
    ("tensor", _tensor),
    ("hybrid", _hybrid),
):
    STRATEGIES.add(_name, _factory)


def strategy_for(config: ParallelConfig) -> Strategy:
    if config.strategy not in STRATEGIES:
        raise ConfigError(f"parallel.strategy: '{config.strategy}' is not available in this build")
    return STRATEGIES.get(config.strategy)(config)
