"""One set of exit reasons: the closed list documented on analytics' Fact.exit_reason
(fact.proto) is orchestration's ExitReason, and analytics classifies every one of them."""

from __future__ import annotations

import re
from pathlib import Path

from cjo_analytics.domain.facts import COMPLETING_EXITS, FAILING_EXITS
from cjo_orchestration.domain.enrollment import ExitReason

FACT_PROTO = Path(__file__).resolve().parents[2] / "protos/cjo/analytics/v1/fact.proto"


def documented_exit_reasons() -> set[str]:
    """The names listed as `//   "name": ...` in the comment above `exit_reason`."""
    text = FACT_PROTO.read_text()
    comment = text[:text.index("string exit_reason = ")].rsplit("\n\n", 1)[-1]
    block = comment[comment.index("Why an enrollment ended (FACT_TYPE_JOURNEY_EXITED)"):]
    return set(re.findall(r'^\s*//\s+"([a-z_]+)":', block, flags=re.M))


def test_orchestration_ends_enrollments_only_for_the_documented_reasons() -> None:
    assert documented_exit_reasons() == {reason.value for reason in ExitReason}


def test_analytics_completes_fails_or_drops_each_reason_as_the_proto_says() -> None:
    completing = {r for r in ExitReason if r in COMPLETING_EXITS}
    failing = {r for r in ExitReason if r in FAILING_EXITS}
    assert completing == {ExitReason.COMPLETED, ExitReason.GOAL_REACHED}
    assert failing == {ExitReason.FAILED}
    # Every other reason drops the enrollment at its node; only the pre-list name of
    # goal_reached completes besides.
    assert set(COMPLETING_EXITS) - {r.value for r in ExitReason} == {"goal"}
