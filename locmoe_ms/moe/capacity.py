"""Expert capacity and the paper's critical lower bound on it."""
from __future__ import annotations

import math

from scipy.special import betainc, erfc, log_ndtr


def expert_capacity(tokens: int, capacity_factor: float, expert_parallel: int, experts: int,
                    min_capacity: int = 1) -> int:
    """Slots per expert for one token source: ceil(tokens * cf / (ep * n)), at least `min_capacity`.

    `tokens` counts the tokens of the ep sources that exchange with each other, so ep * n is the number of
    (source, expert) pairs sharing them.
    """
    return max(min_capacity, math.ceil(tokens * capacity_factor / (expert_parallel * experts)))


def group_capacity(tokens_per_group: int, moe, expert_parallel: int) -> int:
    """Slots per (token group, expert) for moe_config `moe`: the expert_parallel token groups that exchange with
    each other hold expert_parallel * tokens_per_group tokens (MoELayer, the config rules and the strategies)."""
    return expert_capacity(tokens_per_group * expert_parallel, moe.capacity_factor, expert_parallel, moe.expert_num,
                           moe.min_capacity)


def assignment_probability(delta: float, hidden: int) -> float:
    """p_delta = P(|cos(x, w)| >= delta) for x uniform on the unit sphere in R^hidden: 1 - I_{delta^2}(1/2, (d-1)/2),
    computed as I_{1-delta^2}((d-1)/2, 1/2) (the same value without the cancellation that makes 1 - I exactly 0 for
    large delta * sqrt(d)); 0.0 only below float64's range (about 1e-308)."""
    return float(betainc((hidden - 1) / 2.0, 0.5, 1.0 - delta * delta))


def log10_assignment_probability_large_d(delta: float, hidden: int) -> float:
    """log10 of the paper's large-d form of p_delta, erfc(sqrt(delta^2 d / (2 - delta^2))), in log space so that it
    stays finite where p_delta itself underflows: erfc(z) = 2 * Phi(-z * sqrt(2))."""
    z = math.sqrt(delta * delta * hidden / (2.0 - delta * delta))
    return float((math.log(2.0) + log_ndtr(-z * math.sqrt(2.0))) / math.log(10.0))


def assignment_probability_large_d(delta: float, hidden: int) -> float:
    """The paper's large-d form of p_delta: erfc(sqrt(delta^2 d / (2 - delta^2)))."""
    return float(erfc(math.sqrt(delta * delta * hidden / (2.0 - delta * delta))))


def critical_capacity(delta: float, hidden: int, experts: int) -> tuple[float, float]:
    """ec_min = 1 / (n * p_delta), from the incomplete beta and from the erfc approximation; math.inf where p_delta
    is below float64's range (the bound is then unbounded for any practical purpose)."""
    log10_approx = -math.log10(experts) - log10_assignment_probability_large_d(delta, hidden)
    exact = assignment_probability(delta, hidden)
    return (1.0 / (experts * exact) if exact > 0 else math.inf,
            10.0 ** log10_approx if log10_approx < 300 else math.inf)
