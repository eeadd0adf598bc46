"""Statistics shared by the services, in pure Python (math.lgamma): the regularized incomplete
beta function and the Beta distribution's quantiles. Analytics builds its t-test on the former;
decisioning's reports give every action's Beta posterior interval with the latter. Both are
checked against scipy in the tests (scipy is a development dependency only)."""

from __future__ import annotations

import math


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz, as in Numerical
    Recipes' betacf)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (tiny if abs(d) < tiny else d)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                          -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (tiny if abs(d) < tiny else d)
            c = 1.0 + numerator / c
            c = tiny if abs(c) < tiny else c
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def beta_inc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b): P(X <= x) for X ~ Beta(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x with P(X <= x) = ``q`` for X ~ Beta(a, b), by bisection on :func:`beta_inc`
    (monotone, so bisection cannot miss; 200 halvings reach the float's resolution near 0)."""
    if not 0.0 <= q <= 1.0 or a <= 0.0 or b <= 0.0:
        raise ValueError(f"beta_quantile needs 0 <= q <= 1 and a, b > 0 (got {q}, {a}, {b})")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if beta_inc(a, b, middle) < q:
            low = middle
        else:
            high = middle
        if high - low <= 1e-15 * max(high, 1e-300):
            break
    return (low + high) / 2.0


def beta_interval(a: float, b: float, level: float = 0.95) -> tuple[float, float]:
    """The equal-tailed credible interval of Beta(a, b) holding ``level`` of its mass."""
    tail = (1.0 - level) / 2.0
    return beta_quantile(tail, a, b), beta_quantile(1.0 - tail, a, b)
