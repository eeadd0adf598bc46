"""The sample-ratio check when an arm's expected weight is 0 (GetExperimentResults: an exposed
arm missing from `expected_weights`): any exposure of it is a mismatch, as scipy's
power_divergence says (an infinite statistic, p = 0)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from cjo_analytics.api import convert
from cjo_analytics.domain.experiments import experiment_results
from cjo_analytics.domain.stats import ArmCounts, sample_ratio_check


@pytest.mark.parametrize("observed", [[500, 500, 100], [5000, 5000, 1], [0, 0, 3]])
def test_an_exposed_arm_of_weight_zero_is_a_mismatch(observed: list[int]) -> None:
    check = sample_ratio_check(observed, [1, 1, 0])
    n = sum(observed)
    with np.errstate(divide="ignore"):
        reference = stats.power_divergence(observed, [n / 2, n / 2, 0.0], lambda_=1)
    assert (reference.statistic, reference.pvalue) == (math.inf, 0.0)
    assert (check.chi_square, check.p_value) == (math.inf, 0.0)
    assert check.mismatch
    assert check.expected_shares == (0.5, 0.5, 0.0)


def test_an_unexposed_arm_of_weight_zero_adds_no_degree_of_freedom() -> None:
    # Its count is fixed at 0: the test is the other two arms' 1 - 1 = 1 degree of freedom.
    check = sample_ratio_check([520, 480, 0], [1, 1, 0])
    reference = stats.chisquare([520, 480], [500, 500])
    assert check.degrees_of_freedom == 1
    assert check.chi_square == pytest.approx(reference.statistic)  # 1.6
    assert check.p_value == pytest.approx(reference.pvalue, rel=1e-9)  # 0.206, not df 2's 0.449
    assert not check.mismatch


def test_the_reply_names_the_arm_exposed_without_a_weight() -> None:
    arms = [ArmCounts("a", True, 500, 50, 0.0), ArmCounts("b", False, 500, 60, 0.0),
            ArmCounts("c", False, 100, 10, 0.0)]
    results = experiment_results(arms, "", {"a": 1, "b": 1}, {})
    assert results.unweighted_exposed_arms == ["c"]
    reply = convert.experiment_results("e1", results).sample_ratio
    assert (reply.chi_square, reply.p_value, reply.mismatch) == (math.inf, 0.0, True)
    assert reply.warning.startswith("sample ratio mismatch: exposed arm(s) c have no weight in "
                                    "expected_weights")

    weighted = experiment_results(arms, "", {"a": 1, "b": 1, "c": 0.2}, {})
    assert weighted.unweighted_exposed_arms == []
    assert weighted.sample_ratio is not None and not weighted.sample_ratio.mismatch
    assert convert.experiment_results("e1", weighted).sample_ratio.warning == ""


def test_an_optimising_split_with_no_configured_weights_is_not_checked() -> None:
    """Review rhunt2: an optimising split's exposures carry weight 0 (its allocation adapts);
    tested against equal weights, every such split showed a sample ratio mismatch."""
    arms = [ArmCounts("a", True, 300, 30, 0.0), ArmCounts("b", False, 700, 90, 0.0)]
    results = experiment_results(arms, "", {}, {})
    assert results.sample_ratio is None
    assert convert._sample_ratio_warning(results) == ""
    assert [r.expected_share for r in results.arms] == [0.0, 0.0]  # not known
    assert not results.unweighted_exposed_arms
    # With weights (the request's or the facts'), the check is made as before.
    assert experiment_results(arms, "", {"a": 1, "b": 1}, {}).sample_ratio.mismatch
    assert experiment_results(arms, "", {}, {"a": 50, "b": 50}).sample_ratio.mismatch
    assert not experiment_results(arms, "", {}, {"a": 30, "b": 70}).sample_ratio.mismatch
