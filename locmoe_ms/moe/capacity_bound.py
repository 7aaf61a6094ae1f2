"""The paper's critical lower bound on expert capacity (Theorem 1): ec_min = 1 / (n * p_delta).

The capacity arithmetic itself (slots per expert) is locmoe_ms/capacity.py."""
from __future__ import annotations

import math

from scipy.special import betainc, erfc, log_ndtr


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
