"""Expert capacity and the paper's critical lower bound on it."""
from __future__ import annotations

import math

from scipy.special import betainc, erfc


def expert_capacity(tokens: int, capacity_factor: float, expert_parallel: int, experts: int,
                    min_capacity: int = 1) -> int:
    """Slots per expert for one token source: ceil(tokens * cf / (ep * n)), at least `min_capacity`.

    `tokens` counts the tokens of the ep sources that exchange with each other, so ep * n is the number of
    (source, expert) pairs sharing them.
    """
    return max(min_capacity, math.ceil(tokens * capacity_factor / (expert_parallel * experts)))


def assignment_probability(delta: float, hidden: int) -> float:
    """p_delta = P(|cos(x, w)| >= delta) for x uniform on the unit sphere in R^hidden: 1 - I_{delta^2}(1/2, (d-1)/2)."""
    return float(1.0 - betainc(0.5, (hidden - 1) / 2.0, delta * delta))


def assignment_probability_large_d(delta: float, hidden: int) -> float:
    """The paper's large-d form of p_delta: erfc(sqrt(delta^2 d / (2 - delta^2)))."""
    return float(erfc(math.sqrt(delta * delta * hidden / (2.0 - delta * delta))))


def critical_capacity(delta: float, hidden: int, experts: int) -> tuple[float, float]:
    """ec_min = 1 / (n * p_delta), from the incomplete beta and from the erfc approximation."""
    return (1.0 / (experts * assignment_probability(delta, hidden)),
            1.0 / (experts * assignment_probability_large_d(delta, hidden)))
