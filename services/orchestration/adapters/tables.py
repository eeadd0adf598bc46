"""Tables of the orchestration database."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from cjo_platform.db import UtcDateTime
from cjo_platform.limits import MAX_ID_LENGTH, MAX_PROFILE_ID_LENGTH, MAX_WORKSPACE_ID_LENGTH
from cjo_platform.service import shared_tables

metadata = MetaData()
outbox, request_log = shared_tables(metadata)
dead_letters = metadata.tables["dead_letters"]  # cjo_platform.db.dead_letters

journeys = Table(
    "journeys",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("journey_id", String(64), nullable=False),
    Column("display_name", String(200), nullable=False, default=""),
    Column("state", String(16), nullable=False),
    # The draft graph as JSON (JourneyGraph.to_dict); versions freeze copies of it.
    Column("definition", JSON, nullable=False),
    Column("published_version", BigInteger, nullable=False, default=0),
    Column("revision", BigInteger, nullable=False, default=1),  # the etag
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    # Errors its published versions ran into while handling one item (a condition that failed
    # to evaluate, a template that failed to render), counted by the rounds, and the latest.
    Column("error_count", BigInteger, nullable=False, default=0, server_default=text("0")),
    Column("last_error", Text, nullable=False, default="", server_default=""),
    Column("last_error_time", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("workspace_id", "journey_id"),
    Index("ix_journeys_created", "workspace_id", "create_time", "journey_id"),
)

journey_versions = Table(
    "journey_versions",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("journey_id", String(64), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("trigger_event_name", String(200), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "journey_id", "version"),
    Index("ix_journey_versions_trigger", "workspace_id", "trigger_event_name"),
)

# Events forwarded by identity. The unique key deduplicates redeliveries; ``seq`` is the receive
# order the event worker follows, which keeps each profile's events in order.
inbox = Table(
    "inbox",
    metadata,
    # SQLite needs INTEGER PRIMARY KEY for autoincrement; PostgreSQL gets a bigint identity.
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("event_id", String(MAX_ID_LENGTH), nullable=False),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("event_name", String(200), nullable=False, default=""),
    Column("properties", JSON, nullable=False),
    Column("traits", JSON, nullable=False),
    Column("traceparent", String(64), nullable=False, default=""),
    Column("receive_time", UtcDateTime, nullable=False),
    Column("processed", Boolean, nullable=False, default=False),
    # Rounds that failed to apply the event, and the last one's error; after
    # CJO_ORCHESTRATION_EVENT_MAX_ATTEMPTS it goes to the dead letters.
    Column("attempts", Integer, nullable=False, default=0, server_default=text("0")),
    Column("last_error", Text, nullable=False, default="", server_default=""),
    # After a failed attempt the event is not claimed again before this time (the delay doubles
    # with each attempt), so a burst of rounds cannot use up its attempts in seconds.
    Column("not_before", UtcDateTime, nullable=True),
    UniqueConstraint("workspace_id", "event_id", name="uq_inbox_event"),
    # Only the unprocessed tail is ever scanned by seq; a partial index keeps that cheap.
    Index("ix_inbox_pending", "seq", postgresql_where=text("NOT processed"),
          sqlite_where=text("processed = 0")),
    # A claim checks that no older pending event of its profiles is held by another replica.
    Index("ix_inbox_pending_profile", "workspace_id", "profile_id", "seq",
          postgresql_where=text("NOT processed"), sqlite_where=text("processed = 0")),
    # Erasure blanks a profile's stored events.
    Index("ix_inbox_profile", "workspace_id", "profile_id"),
    # Retention deletes processed events by age (CJO_ORCHESTRATION_RETENTION_INBOX_DAYS).
    Index("ix_inbox_processed_time", "receive_time", postgresql_where=text("processed"),
          sqlite_where=text("processed = 1")),
)

# Profiles identity merged into another or erased (profile_merged / profile_deleted events).
# An event still addressed to one (forwarded before identity's merge committed, say) is applied
# to the survivor, or dropped when the profile was erased. Only opaque ids are kept.
retired_profiles = Table(
    "retired_profiles",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    # The profile it was merged into; "" when it was erased.
    Column("successor_profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False, default=""),
    Column("retire_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
)

_SNAPSHOT_STORED = "snapshot_removed_time IS NULL"

enrollments = Table(
    "enrollments",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("enrollment_id", String(64), nullable=False),
    Column("journey_id", String(64), nullable=False),
    Column("journey_version", BigInteger, nullable=False),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("state", String(16), nullable=False),
    Column("current_node_id", String(64), nullable=False, default=""),
    Column("visits", JSON, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=False, default=""),
    Column("step_count", Integer, nullable=False, default=0),
    # When the current node runs; NULL once the enrollment ended.
    Column("due_time", UtcDateTime, nullable=True),
    # A worker holds a claimed enrollment until then; another takes it over only afterwards.
    Column("lease_until", UtcDateTime, nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("traits", JSON, nullable=False),
    Column("properties", JSON, nullable=False),
    Column("event_id", String(MAX_ID_LENGTH), nullable=False, default=""),
    Column("traceparent", String(64), nullable=False, default=""),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    # The event (or scheduled occurrence) that enrolled it, never changed afterwards: event_id
    # follows the latest event (a wait-for-event that wakes overwrites it). The scheduler's
    # once-per-occurrence guard matches on this.
    Column("entry_id", String(MAX_ID_LENGTH), nullable=False, default="", server_default=""),
    # Parked at a wait node: when due, the node's timer fired (not its first run).
    Column("waiting", Boolean, nullable=False, default=False, server_default=text("false")),
    Column("exit_reason", String(200), nullable=False, default="", server_default=""),
    # Conversions count until goal_deadline; goal_time records the first one.
    Column("goal_deadline", UtcDateTime, nullable=True),
    Column("goal_time", UtcDateTime, nullable=True),
    # The properties of the event that enrolled it, never changed afterwards (``properties``
    # follows the latest event): ``journey.entry`` in conditions.
    Column("entry_properties", JSON, nullable=False, server_default="{}"),
    # While a best-time wait asks decisioning for the send time: the latest moment it waits
    # (arrival + max_delay), which retries after an outage never pass.
    Column("wait_deadline", UtcDateTime, nullable=True),
    # When retention emptied an ended enrollment's copy of the person (traits, properties,
    # entry_properties); NULL while it holds one.
    Column("snapshot_removed_time", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("workspace_id", "enrollment_id"),
    Index("ix_enrollments_due", "due_time", postgresql_where=text("state = 'active'"),
          sqlite_where=text("state = 'active'")),
    Index("ix_enrollments_journey", "workspace_id", "journey_id", "create_time"),
    Index("ix_enrollments_profile", "workspace_id", "journey_id", "profile_id"),
    # The event worker reads a profile's enrollments across journeys.
    Index("ix_enrollments_watch", "workspace_id", "profile_id"),
    # A profile walks a journey at most once at a time, even if two workers race.
    Index("uq_enrollments_active", "workspace_id", "journey_id", "profile_id", unique=True,
          postgresql_where=text("state = 'active'"), sqlite_where=text("state = 'active'")),
    # Retention (CJO_ORCHESTRATION_RETENTION_ENROLLMENT_SNAPSHOTS_DAYS): ended enrollments that
    # still hold the person's copy, by end time (an active one is never in it).
    Index("ix_enrollments_snapshots", "update_time",
          postgresql_where=text(f"state <> 'active' AND {_SNAPSHOT_STORED}"),
          sqlite_where=text(f"state <> 'active' AND {_SNAPSHOT_STORED}")),
)

steps = Table(
    "steps",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("enrollment_id", String(64), nullable=False),
    Column("step_number", Integer, nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("visit", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "enrollment_id", "step_number"),
    # Retention deletes finished enrollments' steps by age
    # (CJO_ORCHESTRATION_RETENTION_STEPS_DAYS).
    Index("ix_steps_time", "time"),
)

# One row per firing of a scheduled journey version. The scheduler claims due rows with a lease
# (SKIP LOCKED on PostgreSQL), enrolls the segment's members page by page and stores the page
# cursor with each page's enrollments, so a restart resumes at the page it stopped at.
schedule_occurrences = Table(
    "schedule_occurrences",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("journey_id", String(64), nullable=False),
    Column("journey_version", BigInteger, nullable=False),
    Column("fire_time", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),  # domain.schedule.OccurrenceState
    # ListSegmentMembers' token for the next page; "" before the first page.
    Column("page_token", Text, nullable=False, default=""),
    Column("pages", Integer, nullable=False, default=0),
    Column("enrolled", Integer, nullable=False, default=0),
    # Members listed but not enrolled: re-entry rules, already active, or no profile any more.
    Column("not_enrolled", Integer, nullable=False, default=0),
    Column("detail", Text, nullable=False, default=""),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("lease_token", String(32), nullable=True),
    # Reading the audience failed this many times in a row (identity unavailable, say); the
    # occurrence waits lease_until, with exponential backoff, before it is tried again.
    Column("attempts", Integer, nullable=False, default=0, server_default=text("0")),
    Column("create_time", UtcDateTime, nullable=False),
    Column("start_time", UtcDateTime, nullable=True),  # when the first page was enrolled
    Column("finish_time", UtcDateTime, nullable=True),  # when it reached a final state
    PrimaryKeyConstraint("workspace_id", "journey_id", "journey_version", "fire_time"),
    Index("ix_schedule_occurrences_due", "fire_time",
          postgresql_where=text("state IN ('pending', 'running')"),
          sqlite_where=text("state IN ('pending', 'running')")),
    # The retention sweep finds old final-state occurrences by when they finished.
    Index("ix_schedule_occurrences_finished", "finish_time"),
    # ListScheduleOccurrences pages through a journey's occurrences by fire time, newest first
    # (the primary key orders them by version first).
    Index("ix_schedule_occurrences_journey", "workspace_id", "journey_id", "fire_time",
          "journey_version"),
)
