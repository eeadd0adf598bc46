"""Thompson sampling's exploration floor: on by default so every eligible action keeps the
support off-policy evaluation needs; 0 switches it off, and the setting survives storage and
the API as set (unset stays unset)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cjo.decisioning.v1 import decision_point_pb2 as dp
from cjo_decisioning.api.convert import point_from_proto, point_to_proto
from cjo_decisioning.domain.catalogue import (
    DEFAULT_EXPLORATION_FLOOR,
    Exploration,
    StoredPoint,
    point_from_json,
    point_json,
)

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.mark.parametrize(("exploration", "share"), [
    (Exploration(), DEFAULT_EXPLORATION_FLOOR),
    (Exploration("thompson", 0.0), 0.0),
    (Exploration("thompson", 0.3), 0.3),
    (Exploration("epsilon_greedy"), 0.1),
    (Exploration("epsilon_greedy", 0.0), 0.1),
    (Exploration("greedy"), 0.0),
    (Exploration("uniform_random"), 0.0),
])
def test_the_uniform_share_each_setting_mixes_in(exploration: Exploration, share: float) -> None:
    assert exploration.effective_epsilon == share


@pytest.mark.parametrize("epsilon", [None, 0.0, 0.05])
def test_an_unset_floor_stays_unset_and_zero_stays_zero(epsilon: float | None) -> None:
    sent = dp.DecisionPoint(key="home", actions=["a"], exploration=dp.Exploration(
        method=dp.EXPLORATION_METHOD_THOMPSON, epsilon=epsilon),
        reward=dp.Reward(event_name="order_completed"))
    point = point_from_proto(sent)
    assert point.exploration.epsilon == epsilon
    stored = point_from_json(point_json(point))
    assert stored.exploration == point.exploration
    back = point_to_proto(StoredPoint(stored, "e", T0, T0)).exploration
    assert back.HasField("epsilon") == (epsilon is not None)
    assert stored.exploration.effective_epsilon == (
        DEFAULT_EXPLORATION_FLOOR if epsilon is None else epsilon)
