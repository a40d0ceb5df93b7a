"""The gradual pruning schedule of Zhu & Gupta (2017), https://arxiv.org/abs/1710.01878."""

from __future__ import annotations

from optiforge.compress.config import GradualConfig


def cubic_sparsity(step: int, total_steps: int, target: float, gradual: GradualConfig) -> float:
    """Sparsity at optimizer ``step`` of ``total_steps``.

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n Δt))^3 between the start and
    end fractions of training; s_i before, s_f after. The cubic prunes fast
    while many redundant weights remain and slowly as few are left.
    """
    begin, finish = gradual.start * total_steps, gradual.end * total_steps
    if step >= finish:
        return target
    if step <= begin:
        return gradual.initial_sparsity
    progress = (step - begin) / (finish - begin)
    return target + (gradual.initial_sparsity - target) * (1.0 - progress) ** 3


def update_steps(total_steps: int, gradual: GradualConfig) -> set[int]:
    """Optimizer steps after which the mask is recomputed (the last is at ``end``)."""
    begin, finish = gradual.start * total_steps, gradual.end * total_steps
    count = max(1, gradual.updates)
    return {max(1, min(total_steps, round(begin + (finish - begin) * (index + 1) / count))) for index in range(count)}
