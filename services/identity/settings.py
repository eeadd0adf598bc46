"""Settings of identity's time worker and of ingest's group commit, from environment variables
(validated at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from cjo_identity.service_layer.backfills import BackfillSettings
from cjo_identity.service_layer.ingest import GroupCommitSettings
from cjo_identity.service_layer.lapses import LapseSettings
from cjo_platform.config import Env


@dataclass(frozen=True)
class TimeSettings:
    poll_seconds: float  # how often an idle worker looks for due profiles and backfills
    lapses: LapseSettings
    backfills: BackfillSettings


def load_time_settings(env: Env) -> TimeSettings:
    prefix = "CJO_IDENTITY_"
    retry = env.float(f"{prefix}TIME_RETRY_SECONDS", 60.0, minimum=0.0)
    return TimeSettings(
        poll_seconds=env.float(f"{prefix}TIME_POLL_SECONDS", 1.0, minimum=0.01),
        lapses=LapseSettings(
            batch=env.int(f"{prefix}TIME_BATCH", 500, minimum=1, maximum=5000),
            retry_seconds=retry,
            lease_seconds=env.float(f"{prefix}TIME_LEASE_SECONDS", 60.0, minimum=1.0)),
        backfills=BackfillSettings(
            lease_seconds=env.float(f"{prefix}BACKFILL_LEASE_SECONDS", 60.0, minimum=1.0),
            retry_seconds=retry,
            max_attempts=env.int(f"{prefix}BACKFILL_MAX_ATTEMPTS", 10, minimum=1),
            batch=env.int(f"{prefix}BACKFILL_BATCH", 4, minimum=1, maximum=100)),
    )


def load_group_commit(env: Env) -> GroupCommitSettings:
    prefix = "CJO_IDENTITY_GROUP_COMMIT_"
    return GroupCommitSettings(
        window_seconds=env.float(f"{prefix}MS", 2.0, minimum=0.0) / 1000,
        max_events=env.int(f"{prefix}MAX_EVENTS", 1000, minimum=1, maximum=10_000))
