"""Experiment statistics in pure Python (math.erfc, math.lgamma): two-proportion z-test,
Wald and delta-method intervals, Bayesian probability to beat control, the chi-square
sample-ratio check and Welch's t-test of revenue per exposed person (on the incomplete beta of
cjo_platform.stats, shared with decisioning). Each function is checked against scipy in the
tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cjo_platform.stats import beta_inc

Z_95 = 1.959963984540054
"""The 97.5% quantile of the standard normal: half-width of a two-sided 95% interval."""

SRM_THRESHOLD = 0.001
"""A sample-ratio p-value below this is a mismatch."""


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def two_proportion_p_value(conv_a: int, n_a: int, conv_b: int, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (1.0 when undefined)."""
    if n_a <= 0 or n_b <= 0:
        return 1.0
    pooled = (conv_a + conv_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    if se == 0.0:
        return 1.0
    z = (conv_b / n_b - conv_a / n_a) / se
    return min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))


def difference_interval(conv_a: int, n_a: int, conv_b: int, n_b: int,
                        z: float = Z_95) -> tuple[float, float]:
    """Wald interval of rate_b - rate_a with the unpooled standard error."""
    if n_a <= 0 or n_b <= 0:
        return (0.0, 0.0)
    p_a, p_b = conv_a / n_a, conv_b / n_b
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    diff = p_b - p_a
    return (diff - z * se, diff + z * se)


def relative_lift_interval(conv_a: int, n_a: int, conv_b: int, n_b: int,
                           z: float = Z_95) -> tuple[float, float] | None:
    """Interval of rate_b / rate_a - 1 by the delta method on log(rate_b / rate_a); None when
    either arm has no conversion (the log ratio is undefined)."""
    if conv_a <= 0 or conv_b <= 0 or n_a <= 0 or n_b <= 0:
        return None
    p_a, p_b = conv_a / n_a, conv_b / n_b
    log_ratio = math.log(p_b / p_a)
    se = math.sqrt((1 - p_a) / conv_a + (1 - p_b) / conv_b)
    return (math.exp(log_ratio - z * se) - 1.0, math.exp(log_ratio + z * se) - 1.0)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def probability_b_beats_a(conv_a: int, n_a: int, conv_b: int, n_b: int) -> float:
    """P(p_b > p_a) with p ~ Beta(1 + conversions, 1 + failures) (uniform priors), exact by
    Evan Miller's closed form:

        P = sum_{i=0}^{alpha_b - 1} B(alpha_a + i, beta_a + beta_b)
                                   / ((beta_b + i) B(1 + i, beta_b) B(alpha_a, beta_a))

    summed in log space. The sum has alpha_b terms; when b has more successes than a the
    symmetric form 1 - P(p_a > p_b) is used, so the cost is min(conversions) + 1 terms."""
    a_a, b_a = 1 + conv_a, 1 + n_a - conv_a
    a_b, b_b = 1 + conv_b, 1 + n_b - conv_b
    if a_b > a_a:
        return 1.0 - _miller(a_b, b_b, a_a, b_a)
    return _miller(a_a, b_a, a_b, b_b)


def _miller(a_a: int, b_a: int, a_b: int, b_b: int) -> float:
    """P(X_b > X_a), X ~ Beta(a, b), by the closed form with a_b terms (math.fsum keeps it
    accurate)."""
    base = -_log_beta(a_a, b_a)
    terms = [
        math.exp(_log_beta(a_a + i, b_a + b_b) - math.log(b_b + i) - _log_beta(1 + i, b_b) + base)
        for i in range(a_b)
    ]
    return min(1.0, max(0.0, math.fsum(terms)))


def _gamma_q(a: float, x: float) -> float:
    """Regularized upper incomplete gamma Q(a, x) (series below a + 1, Lentz continued fraction
    above, as in Numerical Recipes)."""
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_front))
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return min(1.0, math.exp(log_front) * h)


def chi_square_sf(statistic: float, degrees_of_freedom: int) -> float:
    """P(X > statistic) for X chi-square distributed with the given degrees of freedom."""
    return _gamma_q(degrees_of_freedom / 2.0, statistic / 2.0)


@dataclass(frozen=True)
class SampleRatio:
    chi_square: float
    degrees_of_freedom: int
    p_value: float
    expected_shares: tuple[float, ...]

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_THRESHOLD


def sample_ratio_check(observed: Sequence[int], weights: Sequence[float]) -> SampleRatio:
    """Pearson chi-square goodness of fit of the observed exposures to the weights. An arm of
    weight 0 should never be exposed: one exposure of it is a mismatch by itself (the statistic
    is infinite and p is 0, as scipy's ``power_divergence`` gives); unexposed, its count is
    fixed and it adds no degree of freedom."""
    total_weight = sum(weights)
    shares = tuple(w / total_weight for w in weights)
    n = sum(observed)
    statistic = 0.0
    cells = 0
    for count, share in zip(observed, shares, strict=True):
        if share <= 0:
            if count > 0:
                statistic = math.inf
            continue
        cells += 1
        expected = n * share
        if expected > 0:
            statistic += (count - expected) ** 2 / expected
    df = max(cells - 1, 0)
    if math.isinf(statistic):
        return SampleRatio(statistic, df, 0.0, shares)
    return SampleRatio(statistic, df, chi_square_sf(statistic, df) if df > 0 else 1.0, shares)


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| > |t|) for Student's T with ``df`` (any positive real) degrees of freedom."""
    return min(1.0, beta_inc(df / 2.0, 0.5, df / (df + t * t)))


def t_quantile_two_sided(alpha: float, df: float) -> float:
    """The t with P(|T| > t) = ``alpha`` (e.g. 0.05 for a 95% interval), by bisection."""
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > alpha:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_two_sided_p(middle, df) > alpha:
            low = middle
        else:
            high = middle
        if high - low <= 1e-13 * high:
            break
    return (low + high) / 2.0


@dataclass(frozen=True)
class Welch:
    difference: float
    interval: tuple[float, float]
    p_value: float
    degrees_of_freedom: float


def _mean_and_variance(n: int, values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample variance of ``n`` observations: ``values`` and n - len(values) zeros
    (the exposed people who did not convert), in two passes."""
    mean = math.fsum(values) / n
    squares = math.fsum((v - mean) ** 2 for v in values) + (n - len(values)) * mean * mean
    return mean, squares / (n - 1)


def welch(n_a: int, values_a: Sequence[float], n_b: int, values_b: Sequence[float],
          confidence: float = 0.95) -> Welch | None:
    """Welch's unequal-variances t-test and interval of mean_b - mean_a, where each arm has n
    observations: its ``values`` and zeros for the rest. None when an arm has fewer than two
    observations or neither varies (the statistic is undefined)."""
    if n_a < 2 or n_b < 2:
        return None
    mean_a, var_a = _mean_and_variance(n_a, values_a)
    mean_b, var_b = _mean_and_variance(n_b, values_b)
    share_a, share_b = var_a / n_a, var_b / n_b
    se2 = share_a + share_b
    if se2 <= 0.0:
        return None
    df = se2 * se2 / (share_a * share_a / (n_a - 1) + share_b * share_b / (n_b - 1))
    se = math.sqrt(se2)
    difference = mean_b - mean_a
    half = t_quantile_two_sided(1.0 - confidence, df) * se
    return Welch(difference, (difference - half, difference + half),
                 t_two_sided_p(difference / se, df), df)


@dataclass(frozen=True)
class ArmCounts:
    arm: str
    control: bool
    exposures: int
    conversions: int
    revenue: float
    # Revenue of each converted person (their conversions in the window summed); the other
    # exposed people count 0. Feeds the Welch test of revenue per exposed person.
    person_revenues: tuple[float, ...] = ()

    @property
    def rate(self) -> float:
        return self.conversions / self.exposures if self.exposures else 0.0

    @property
    def revenue_per_exposure(self) -> float:
        return self.revenue / self.exposures if self.exposures else 0.0


@dataclass(frozen=True)
class Comparison:
    absolute_lift: float
    absolute_ci: tuple[float, float]
    relative_lift: float
    relative_ci: tuple[float, float]
    p_value: float
    probability_to_beat: float
    revenue_per_exposure_lift: float = 0.0
    revenue: Welch | None = None  # None when undefined


def compare(control: ArmCounts, arm: ArmCounts) -> Comparison:
    """``arm`` against ``control``."""
    c, n = control.conversions, control.exposures
    relative = (arm.rate - control.rate) / control.rate if control.rate > 0 else 0.0
    return Comparison(
        revenue_per_exposure_lift=arm.revenue_per_exposure - control.revenue_per_exposure,
        revenue=welch(control.exposures, control.person_revenues, arm.exposures,
                      arm.person_revenues),
        absolute_lift=arm.rate - control.rate,
        absolute_ci=difference_interval(c, n, arm.conversions, arm.exposures),
        relative_lift=relative,
        relative_ci=relative_lift_interval(c, n, arm.conversions, arm.exposures) or (0.0, 0.0),
        p_value=two_proportion_p_value(c, n, arm.conversions, arm.exposures),
        probability_to_beat=probability_b_beats_a(c, n, arm.conversions, arm.exposures),
    )


@dataclass(frozen=True)
class Incrementality:
    incremental_conversions: float
    incremental_revenue: float
    incrementality: float


def incrementality(control: ArmCounts, treatments: Sequence[ArmCounts]) -> Incrementality:
    """What every non-control arm together gained over the holdout."""
    n_t = sum(a.exposures for a in treatments)
    c_t = sum(a.conversions for a in treatments)
    r_t = sum(a.revenue for a in treatments)
    rate_t = c_t / n_t if n_t else 0.0
    revenue_per_control = control.revenue / control.exposures if control.exposures else 0.0
    return Incrementality(
        incremental_conversions=c_t - control.rate * n_t,
        incremental_revenue=r_t - revenue_per_control * n_t,
        incrementality=(rate_t - control.rate) / rate_t if rate_t > 0 else 0.0,
    )
