"""Experiment statistics against independent computations (scipy, numerical integration,
Monte Carlo)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from cjo_analytics.domain.experiments import experiment_results
from cjo_analytics.domain.stats import (
    ArmCounts,
    chi_square_sf,
    difference_interval,
    incrementality,
    probability_b_beats_a,
    relative_lift_interval,
    sample_ratio_check,
    t_quantile_two_sided,
    t_two_sided_p,
    two_proportion_p_value,
    welch,
)

CASES = [(120, 1000, 150, 1000), (5, 40, 9, 38), (300, 10_000, 340, 10_000),
         (0, 50, 3, 50), (480, 5000, 412, 4900)]


@pytest.mark.parametrize(("c_a", "n_a", "c_b", "n_b"), CASES)
def test_z_test_p_value_matches_the_uncorrected_chi_square_of_the_2x2_table(
        c_a: int, n_a: int, c_b: int, n_b: int) -> None:
    table = [[c_a, n_a - c_a], [c_b, n_b - c_b]]
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert two_proportion_p_value(c_a, n_a, c_b, n_b) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("c_a", "n_a", "c_b", "n_b"), CASES)
def test_confidence_intervals_match_normal_quantiles(c_a: int, n_a: int, c_b: int,
                                                     n_b: int) -> None:
    z = stats.norm.ppf(0.975)
    p_a, p_b = c_a / n_a, c_b / n_b
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    low, high = difference_interval(c_a, n_a, c_b, n_b)
    assert low == pytest.approx(p_b - p_a - z * se, abs=1e-12)
    assert high == pytest.approx(p_b - p_a + z * se, abs=1e-12)
    relative = relative_lift_interval(c_a, n_a, c_b, n_b)
    if c_a == 0:
        assert relative is None
        return
    log_se = math.sqrt(1 / c_a - 1 / n_a + 1 / c_b - 1 / n_b)
    assert relative is not None
    assert relative[0] == pytest.approx(math.exp(math.log(p_b / p_a) - z * log_se) - 1, rel=1e-9)
    assert relative[1] == pytest.approx(math.exp(math.log(p_b / p_a) + z * log_se) - 1, rel=1e-9)


@pytest.mark.parametrize(("c_a", "n_a", "c_b", "n_b"), CASES)
def test_probability_to_beat_matches_numerical_integration(c_a: int, n_a: int, c_b: int,
                                                           n_b: int) -> None:
    a = stats.beta(1 + c_a, 1 + n_a - c_a)
    b = stats.beta(1 + c_b, 1 + n_b - c_b)
    # P(B > A) = integral of f_B(x) * F_A(x) dx, split where the mass is.
    points = sorted({a.mean(), b.mean()})
    expected, _ = integrate.quad(lambda x: b.pdf(x) * a.cdf(x), 0, 1, points=points,
                                 limit=500, epsabs=1e-12)
    assert probability_b_beats_a(c_a, n_a, c_b, n_b) == pytest.approx(expected, abs=1e-7)


def test_probability_to_beat_agrees_with_monte_carlo() -> None:
    rng = np.random.default_rng(7)
    draws_a = rng.beta(1 + 120, 1 + 880, 400_000)
    draws_b = rng.beta(1 + 150, 1 + 850, 400_000)
    simulated = float(np.mean(draws_b > draws_a))
    assert probability_b_beats_a(120, 1000, 150, 1000) == pytest.approx(simulated, abs=0.003)
    # Symmetry: the two arms' probabilities add up to one.
    assert (probability_b_beats_a(120, 1000, 150, 1000)
            + probability_b_beats_a(150, 1000, 120, 1000)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("statistic", "df"), [(0.0, 1), (0.5, 1), (3.84, 1), (12.0, 2),
                                                (40.0, 3), (150.0, 1), (7.3, 5)])
def test_chi_square_tail_matches_scipy(statistic: float, df: int) -> None:
    assert chi_square_sf(statistic, df) == pytest.approx(stats.chi2.sf(statistic, df),
                                                         rel=1e-9, abs=1e-300)


def test_sample_ratio_check_matches_scipy_and_flags_a_broken_split() -> None:
    fine = sample_ratio_check([5030, 4970], [50, 50])
    expected = stats.chisquare([5030, 4970], [5000, 5000])
    assert fine.chi_square == pytest.approx(expected.statistic)
    assert fine.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert not fine.mismatch

    broken = sample_ratio_check([9000, 5200, 5800], [0.5, 0.25, 0.25])
    expected = stats.chisquare([9000, 5200, 5800], [10_000, 5000, 5000])
    assert broken.p_value == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)
    assert broken.degrees_of_freedom == 2
    assert broken.mismatch


def test_experiment_results_compare_each_arm_with_the_flagged_control() -> None:
    arms = [ArmCounts("b", False, 1000, 150, 1500.0), ArmCounts("holdout", True, 1000, 120, 900.0),
            ArmCounts("c", False, 1000, 118, 1000.0)]
    results = experiment_results(arms, "", {}, {"b": 1, "c": 1, "holdout": 1})
    assert results.control_arm == "holdout"
    assert [r.counts.arm for r in results.arms] == ["holdout", "b", "c"]
    assert results.arms[0].comparison is None
    b = results.arms[1].comparison
    assert b is not None
    assert b.absolute_lift == pytest.approx(0.03)
    assert b.relative_lift == pytest.approx(0.25)
    assert b.p_value < 0.05 < results.arms[2].comparison.p_value  # type: ignore[union-attr]
    assert results.sample_ratio is not None and not results.sample_ratio.mismatch
    inc = incrementality(arms[1], [arms[0], arms[2]])
    assert results.incrementality == inc
    # Treatment converted 268 of 2000; at the holdout's 12% it would have converted 240.
    assert inc.incremental_conversions == pytest.approx(28.0)
    assert inc.incremental_revenue == pytest.approx(2500.0 - 0.9 * 2000)
    assert inc.incrementality == pytest.approx((0.134 - 0.12) / 0.134)


WELCH_CASES = [
    # (exposures, converted people's revenues) of control and arm
    (200, [20.0, 35.5, 12.0, 80.0, 44.0, 19.99], 180, [50.0, 75.0, 12.5, 99.0, 31.0, 66.0, 8.0]),
    (40, [5.0] * 3, 38, [5.0] * 9),
    (5000, [float(v) for v in range(1, 120)], 4900, [float(v) * 1.3 for v in range(1, 150)]),
    (3, [100.0], 2, [1.0, 2.0]),
]


def _with_zeros(n: int, values: list[float]) -> np.ndarray:
    return np.array(values + [0.0] * (n - len(values)))


@pytest.mark.parametrize(("n_a", "values_a", "n_b", "values_b"), WELCH_CASES)
def test_welch_matches_scipy_and_the_welch_satterthwaite_degrees_of_freedom(
        n_a: int, values_a: list[float], n_b: int, values_b: list[float]) -> None:
    a, b = _with_zeros(n_a, values_a), _with_zeros(n_b, values_b)
    result = welch(n_a, values_a, n_b, values_b)
    assert result is not None
    expected = stats.ttest_ind(b, a, equal_var=False)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-8)
    va, vb = a.var(ddof=1) / n_a, b.var(ddof=1) / n_b
    df = (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    assert result.degrees_of_freedom == pytest.approx(df, rel=1e-10)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    difference = b.mean() - a.mean()
    assert result.difference == pytest.approx(difference, rel=1e-12)
    assert result.interval[0] == pytest.approx(difference - half, rel=1e-9, abs=1e-12)
    assert result.interval[1] == pytest.approx(difference + half, rel=1e-9, abs=1e-12)
    # scipy's own interval of the same test agrees.
    low, high = expected.confidence_interval(0.95)
    assert result.interval == pytest.approx((low, high), rel=1e-9)


@pytest.mark.parametrize("df", [1.0, 2.5, 7.3, 30.0, 1234.5])
@pytest.mark.parametrize("t", [0.0, 0.4, 1.96, 3.1, 12.0])
def test_t_distribution_matches_scipy(df: float, t: float) -> None:
    assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-300)
    assert t_quantile_two_sided(0.05, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-10)


def test_welch_is_undefined_without_two_people_or_without_variance() -> None:
    assert welch(1, [5.0], 10, [1.0]) is None
    assert welch(10, [], 10, []) is None


def test_an_arm_compares_its_revenue_per_exposed_person_with_the_control() -> None:
    control = ArmCounts("control", True, 200, 6, 211.49, (20.0, 35.5, 12.0, 80.0, 44.0, 19.99))
    arm = ArmCounts("b", False, 180, 3, 150.0, (50.0, 75.0, 25.0))
    [c, b] = experiment_results([control, arm], "", {}, {}).arms
    assert b.comparison is not None and b.comparison.revenue is not None
    assert b.counts.revenue_per_exposure == pytest.approx(150.0 / 180)
    assert b.comparison.revenue_per_exposure_lift == pytest.approx(150.0 / 180 - 211.49 / 200)
    expected = stats.ttest_ind(_with_zeros(180, [50.0, 75.0, 25.0]),
                               _with_zeros(200, list(control.person_revenues)),
                               equal_var=False)
    assert b.comparison.revenue.p_value == pytest.approx(expected.pvalue, rel=1e-8)
    assert c.comparison is None
