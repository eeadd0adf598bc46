"""The one retry policy: exponential, capped, jittered within its share, safe at any attempt."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from cjo_platform.backoff import RetryPolicy


def test_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay=timedelta(seconds=1),
                         max_delay=timedelta(seconds=300))
    assert [policy.delay(n).total_seconds() for n in range(1, 11)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    # A retry that never gives up (a scheduler's audience read) can count any number of tries.
    assert policy.delay(1_000_000) == timedelta(seconds=300)
    assert not policy.exhausted(9)
    assert policy.exhausted(10)


def test_equal_jitter_keeps_half_of_each_delay_fixed() -> None:
    policy = RetryPolicy(base_delay=timedelta(seconds=30), max_delay=timedelta(hours=1),
                         jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(3, rng) for _ in range(200)]
    assert all(timedelta(seconds=60) <= d <= timedelta(seconds=120) for d in delays)
    assert len(set(delays)) > 100  # spread out, not one instant


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"jitter": 1.5}])
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
