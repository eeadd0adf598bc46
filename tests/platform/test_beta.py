"""The shared Beta distribution functions against scipy."""

from __future__ import annotations

import pytest
from scipy import stats

from cjo_platform.stats import beta_inc, beta_interval, beta_quantile

SHAPES = [(1, 1), (1, 101), (3, 9), (51, 951), (1 + 4_000, 1 + 96_000), (0.5, 0.5), (120, 2)]


@pytest.mark.parametrize(("a", "b"), SHAPES)
@pytest.mark.parametrize("x", [1e-6, 0.01, 0.04, 0.3, 0.5, 0.97])
def test_incomplete_beta_is_the_beta_cdf(a: float, b: float, x: float) -> None:
    assert beta_inc(a, b, x) == pytest.approx(stats.beta.cdf(x, a, b), rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(("a", "b"), SHAPES)
@pytest.mark.parametrize("q", [0.0, 1e-9, 0.025, 0.5, 0.975, 1.0])
def test_beta_quantile_inverts_the_cdf(a: float, b: float, q: float) -> None:
    assert beta_quantile(q, a, b) == pytest.approx(stats.beta.ppf(q, a, b), rel=1e-9, abs=1e-15)


def test_beta_interval_is_equal_tailed() -> None:
    low, high = beta_interval(1 + 30, 1 + 970, 0.9)
    assert (low, high) == pytest.approx(stats.beta.interval(0.9, 31, 971), rel=1e-9)


@pytest.mark.parametrize(("q", "a", "b"), [(-0.1, 1, 1), (1.5, 1, 1), (0.5, 0, 1)])
def test_beta_quantile_refuses_what_is_no_distribution(q: float, a: float, b: float) -> None:
    with pytest.raises(ValueError):
        beta_quantile(q, a, b)
