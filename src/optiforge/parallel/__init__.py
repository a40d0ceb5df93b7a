"""How training is spread over processes. One process is the default."""

from optiforge.parallel.strategy import SingleProcess, Strategy

__all__ = ["SingleProcess", "Strategy"]
