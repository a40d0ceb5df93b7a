"""Search across techniques: measure candidate sequences of stages, return the Pareto front and a choice.

The search knows no stage kind: whoever runs it supplies the callable that applies one (the ``search``
stage passes the stage registry's). See :class:`~optiforge.search.config.SearchConfig` for the space.
"""

from optiforge.search.config import OBJECTIVES, ProxyConfig, SearchConfig
from optiforge.search.engine import Search, SearchResult
from optiforge.search.results import search_summary, write_search
from optiforge.search.space import CandidateSpec, Step, expand_space
from optiforge.search.walk import ApplyStep, Outcome, StepResult

__all__ = [
    "OBJECTIVES",
    "ApplyStep",
    "CandidateSpec",
    "Outcome",
    "ProxyConfig",
    "Search",
    "SearchConfig",
    "SearchResult",
    "Step",
    "StepResult",
    "expand_space",
    "search_summary",
    "write_search",
]
