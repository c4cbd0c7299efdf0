"""Pure schedule functions for the regularizer weight (design.md §4, §6)."""

from __future__ import annotations


def linear(step: int, total_steps: float) -> float:
    """KL annealing: w(t) = min(1, t / total_steps); w = 1 when total_steps <= 0."""
    if total_steps <= 0:
        return 1.0
    return min(1.0, step / total_steps)


def cyclic(step: int, period_steps: float, rise_steps: float) -> float:
    """Cyclic annealing (Fu et al. 2019): restart every period; rise linearly, then hold at 1.

    w(t) = min(1, (t mod period) / rise).
    """
    if period_steps <= 0:
        raise ValueError("period_steps must be positive")
    return linear(step % period_steps, rise_steps)
