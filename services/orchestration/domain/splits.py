"""A/B splits: which arm a profile falls in, stably across visits and versions."""

from __future__ import annotations

import hashlib

from cjo_orchestration.domain.journeys import SplitAction, SplitArm


def split_bucket(journey_id: str, profile_id: str) -> int:
    """0..99, the same for a profile in a journey on every visit and every version."""
    digest = hashlib.sha256(f"{journey_id}\x00{profile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def split_arm(split: SplitAction, journey_id: str, profile_id: str) -> SplitArm:
    bucket = split_bucket(journey_id, profile_id)
    total = 0
    for arm in split.arms:
        total += arm.percent
        if bucket < total:
            return arm
    return split.arms[-1]


def experiment_id(journey_id: str, node_id: str) -> str:
    """The id analytics' experiment reports know a split by."""
    return f"{journey_id}:{node_id}"
