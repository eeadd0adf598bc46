"""Settings of the orchestration engine, from environment variables (validated at start-up)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cjo_platform.backoff import RetryPolicy
from cjo_platform.config import Env
from cjo_platform.limits import MAX_BATCH_ITEMS

PROFILE_READ_BACKOFF = RetryPolicy(max_attempts=1000, base_delay=timedelta(seconds=1),
                                   max_delay=timedelta(seconds=60), jitter=0.5)


@dataclass(frozen=True)
class EngineSettings:
    # How often idle workers look for work they were not woken for (the safety net: new work
    # wakes them, and they sleep until the next timer they know of when that comes sooner).
    poll_seconds: float
    event_batch: int  # inbox events matched per transaction
    # Enrollments claimed per pass. A pass has a fixed cost (its claim and record
    # transactions, one profile read and one send call per workspace, its span) of several
    # milliseconds of CPU; 500 spreads it over five times the timers of 100 when a backlog is
    # due (a pass claims only what is due, so a quiet journey's passes stay small). Renders go
    # out a hundred at a time and sends by payload bytes (adapters.peers), whatever the batch.
    step_batch: int
    # Passes a step worker runs at once. A pass mostly waits for content and delivery; with a
    # few in flight, one pass's database work overlaps the others' peer calls. Each claims its
    # own batch under its own lease. After a crash, up to step_lanes x step_batch sends are
    # retried (delivery accepts each once, by idempotency key).
    step_lanes: int
    lease_seconds: float  # how long a claimed enrollment is reserved for its worker
    peer_timeout_seconds: float  # deadline of one call to content, delivery or analytics
    retry: RetryPolicy
    # Scheduled triggers: segment members enrolled per page (one transaction each), and
    # occurrences claimed per pass.
    schedule_page_size: int = 500
    schedule_batch: int = 10
    # Occurrences in a final state (done, failed, skipped, ...) are deleted this many days after
    # they finished; the latest of each journey is always kept.
    schedule_retention_days: int = 30
    # Rounds that may fail to apply one inbox event before it is given up to the dead letters
    # (its profile's later events wait behind it until then).
    event_max_attempts: int = 5
    # Identity could not answer a step round's profile read: the workspace's due enrollments
    # wait this backoff (per workspace, by consecutive failed reads, jittered) and are retried
    # without end; it never counts as an enrollment's attempt.
    profile_read_backoff: RetryPolicy = PROFILE_READ_BACKOFF
    # Identity answered a merged-away profile with its survivor before its profile_merged event
    # reached orchestration: the enrollment waits this long (no attempt counted) for the event
    # round to merge the two profiles' enrollments first.
    merge_wait: timedelta = timedelta(seconds=1)
    # ... for merges identity made at most this long ago: an older merge whose event never came
    # (dead-lettered, say) no longer holds the enrollments back.
    merge_wait_limit: timedelta = timedelta(minutes=10)


def load_engine_settings(env: Env) -> EngineSettings:
    prefix = "CJO_ORCHESTRATION_"
    poll = env.float(f"{prefix}POLL_SECONDS", 2.0, minimum=0.01)
    timeout = env.float(f"{prefix}PEER_TIMEOUT_SECONDS", 10.0, minimum=0.1)
    # A lease must outlast the peer calls made under it, or a second worker could take over.
    lease = env.float(f"{prefix}LEASE_SECONDS", 60.0, minimum=1.0)
    if lease < 3 * timeout:
        env.errors.append(f"{prefix}LEASE_SECONDS={lease} must be at least 3 x "
                          f"{prefix}PEER_TIMEOUT_SECONDS ({timeout})")
    return EngineSettings(
        poll_seconds=poll,
        event_batch=env.int(f"{prefix}EVENT_BATCH", 500, minimum=1, maximum=5000),
        step_batch=env.int(f"{prefix}STEP_BATCH", 500, minimum=1, maximum=MAX_BATCH_ITEMS),
        step_lanes=env.int(f"{prefix}STEP_LANES", 3, minimum=1, maximum=32),
        lease_seconds=lease,
        peer_timeout_seconds=timeout,
        # No jitter: delays stay base x 2^(n-1), capped, exactly as operators configure them.
        retry=RetryPolicy(
            base_delay=timedelta(seconds=env.float(f"{prefix}RETRY_BASE_SECONDS", 1.0,
                                                   minimum=0.0)),
            max_delay=timedelta(seconds=env.float(f"{prefix}RETRY_MAX_SECONDS", 300.0,
                                                  minimum=0.0)),
            max_attempts=env.int(f"{prefix}RETRY_MAX_ATTEMPTS", 10, minimum=1, maximum=1000),
        ),
        schedule_page_size=env.int(f"{prefix}SCHEDULE_PAGE_SIZE", 500, minimum=1,
                                   maximum=MAX_BATCH_ITEMS),
        schedule_batch=env.int(f"{prefix}SCHEDULE_BATCH", 10, minimum=1, maximum=100),
        schedule_retention_days=env.int(f"{prefix}SCHEDULE_RETENTION_DAYS", 30, minimum=1,
                                        maximum=3650),
        event_max_attempts=env.int(f"{prefix}EVENT_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
        profile_read_backoff=RetryPolicy(
            max_attempts=1000, base_delay=timedelta(seconds=1),
            max_delay=timedelta(seconds=env.float(f"{prefix}PROFILE_READ_MAX_BACKOFF_SECONDS",
                                                  60.0, minimum=1.0)),
            jitter=0.5),
    )
