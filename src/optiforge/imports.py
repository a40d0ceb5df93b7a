"""Importing optional libraries that talk about what this machine lacks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

# On import, torchao logs a warning for each CUDA kernel library it cannot load and for missing
# Triton, and torch logs one for each Enum torchao registers with pytree (torchao 0.18, torch 2.13,
# CPU-only machine). None of it concerns a CPU run, and transformers imports torchao whenever it is
# installed, so loading any model would print them.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


@contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Keep only errors from the loggers ``names`` (``""`` is the root logger) while the block runs."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def quiet_optional_imports():
    """Keep only errors from :data:`NOISY_LOGGERS` while the block runs.

    >>> import logging
    >>> with quiet_optional_imports():
    ...     logging.getLogger("torchao").isEnabledFor(logging.WARNING)
    False
    >>> logging.getLogger("torchao").isEnabledFor(logging.WARNING)
    True
    """
    return quiet_loggers(*NOISY_LOGGERS)
