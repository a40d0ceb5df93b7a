"""How training is spread over processes. One process is the default.

``strategy_for(ParallelConfig(strategy=...))`` joins the process group the
launcher set up (``optiforge run --nproc N`` or ``torchrun``) and returns the
strategy the training loop takes; the heavy ``torch.distributed`` modules are
imported only then.
"""

from optiforge.parallel.strategies import STRATEGIES, strategy_for
from optiforge.parallel.strategy import SingleProcess, Strategy

__all__ = ["STRATEGIES", "SingleProcess", "Strategy", "strategy_for"]
