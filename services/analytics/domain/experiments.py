"""An experiment's results from its per-arm counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime

from cjo_analytics.domain.stats import (
    ArmCounts,
    Comparison,
    Incrementality,
    SampleRatio,
    compare,
    incrementality,
    sample_ratio_check,
)
from cjo_platform.experiment_ids import CONTENT_EXPERIMENT_PREFIX


@dataclass(frozen=True)
class ArmResult:
    counts: ArmCounts
    control: bool
    comparison: Comparison | None
    expected_share: float


@dataclass(frozen=True)
class ExperimentResults:
    control_arm: str
    arms: list[ArmResult]
    sample_ratio: SampleRatio | None
    incrementality: Incrementality | None
    currency: str = ""  # the one currency of the counted conversions, "" when none or mixed
    mixed_currencies: tuple[str, ...] = ()  # set when the conversions carry several

    @property
    def unweighted_exposed_arms(self) -> list[str]:
        """Arms exposed though their expected weight is 0: each is a sample ratio mismatch."""
        if self.sample_ratio is None:  # no weights known: no arm is unweighted
            return []
        return [r.counts.arm for r in self.arms
                if r.expected_share == 0 and r.counts.exposures > 0]


CONTENT_PREFIX = CONTENT_EXPERIMENT_PREFIX
"""Experiment ids of content variant tests start with it (delivery derives them)."""


@dataclass(frozen=True)
class ExperimentArm:
    arm: str
    control: bool
    weight: float


@dataclass(frozen=True)
class ExperimentSummary:
    """What an experiment's exposures say about it (ListExperiments)."""

    experiment_id: str
    journey_id: str
    node_id: str
    content_key: str
    first_exposure: datetime
    last_exposure: datetime
    exposures: int  # distinct people
    arms: list[ExperimentArm]


def experiment_results(arms: Sequence[ArmCounts], control_arm: str,
                       request_weights: Mapping[str, float],
                       fact_weights: Mapping[str, float],
                       currencies: Set[str] = frozenset()) -> ExperimentResults:
    """Compare every arm with the control (the named one, else the one flagged control).
    Expected weights: the request's, else those carried by the facts (when every arm has
    one); else there is no configured split to test (an optimising split adapts its
    allocation: its facts carry weight 0) and no sample-ratio check is made. An arm with no
    weight (or not exposed at all) counts with weight 0 / exposures 0."""
    names = sorted({a.arm for a in arms} | set(request_weights))
    by_name = {a.arm: a for a in arms}
    if not control_arm:
        flagged = sorted(a.arm for a in arms if a.control)
        control_arm = flagged[0] if flagged else ""
    counts = [by_name.get(n, ArmCounts(n, False, 0, 0, 0.0)) for n in names]
    weights: list[float] | None = None
    if request_weights:
        weights = [request_weights.get(n, 0.0) for n in names]
    elif fact_weights and all(n in fact_weights for n in names):
        weights = [fact_weights[n] for n in names]
    # Review rhunt2: testing an optimising split's adaptive allocation against equal weights
    # flagged every one as a sample ratio mismatch.
    srm = (sample_ratio_check([c.exposures for c in counts], weights)
           if weights is not None and len(names) > 1 else None)
    # No check: one arm expects every exposure; several arms without weights, none known.
    shares = srm.expected_shares if srm else tuple(
        1.0 if len(names) == 1 else 0.0 for _ in names)
    control = by_name.get(control_arm)
    results = [
        ArmResult(c, c.arm == control_arm,
                  compare(control, c) if control is not None and c.arm != control_arm else None,
                  share)
        for c, share in zip(counts, shares, strict=True)
    ]
    results.sort(key=lambda r: (not r.control, r.counts.arm))
    lift = None
    if control is not None:
        lift = incrementality(control, [c for c in counts if c.arm != control_arm])
    mixed = tuple(sorted(currencies)) if len(currencies) > 1 else ()
    currency = next(iter(currencies)) if len(currencies) == 1 else ""
    return ExperimentResults(control_arm, results, srm, lift, currency, mixed)
