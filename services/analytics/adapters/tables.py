"""Tables of the analytics database."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    false,
    text,
)

from cjo_platform.db import UtcDateTime
from cjo_platform.limits import MAX_ID_LENGTH, MAX_PROFILE_ID_LENGTH, MAX_WORKSPACE_ID_LENGTH
from cjo_platform.service import shared_tables

metadata = MetaData()
outbox, request_log = shared_tables(metadata)


def _text(name: str, length: int = MAX_ID_LENGTH) -> Column[str]:
    return Column(name, String(length), nullable=False, default="", server_default="")


facts = Table(
    "facts",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("fact_id", String(MAX_ID_LENGTH), nullable=False),
    Column("type", String(32), nullable=False),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("journey_id", String(MAX_ID_LENGTH), nullable=False, default=""),
    Column("enrollment_id", String(MAX_ID_LENGTH), nullable=False, default=""),
    Column("message_id", String(MAX_ID_LENGTH), nullable=False, default=""),
    Column("occur_time", UtcDateTime, nullable=False),
    Column("record_time", UtcDateTime, nullable=False),
    Column("journey_version", BigInteger, nullable=False, default=0, server_default=text("0")),
    _text("node_id"),
    Column("channel", Integer, nullable=False, default=0, server_default=text("0")),
    _text("content_key"),
    _text("variant"),
    _text("experiment_id"),
    _text("arm"),
    Column("control", Boolean, nullable=False, default=False, server_default=false()),
    Column("arm_weight", Float, nullable=False, default=0.0, server_default=text("0")),
    Column("revenue", Float, nullable=False, default=0.0, server_default=text("0")),
    _text("currency", 3),
    _text("exit_reason"),
    # Whole hours since the Unix epoch: time buckets as integer arithmetic that SQLite and
    # PostgreSQL evaluate alike (a day is occur_hour / 24).
    Column("occur_hour", BigInteger, nullable=False, default=0, server_default=text("0")),
    # End of an exposure's conversion window (journey splits: the enrollment's goal deadline).
    Column("conversion_deadline", UtcDateTime, nullable=True),
    # NODE_VISITED: the n-th arrival of its enrollment (0: not numbered, an old visit fact).
    Column("visit_sequence", BigInteger, nullable=False, server_default=text("0")),
    # GOAL_REACHED / CONVERTED: the event that made the conversion ('': not known, an old fact);
    # reports across journeys count one conversion per (person, source event).
    # (No client default: inserts written for older schemas leave it out.)
    Column("source_event_id", String(MAX_ID_LENGTH), nullable=False, server_default=""),
    PrimaryKeyConstraint("workspace_id", "fact_id"),
    # Journey report and funnel: a journey's facts by type, version and enrollment.
    Index("ix_facts_funnel", "workspace_id", "journey_id", "type", "journey_version",
          "enrollment_id"),
    # Experiments and attribution: a profile's facts in time order.
    Index("ix_facts_profile", "workspace_id", "profile_id", "occur_time"),
    # Attribution and channel reports: facts of a type in a time range.
    Index("ix_facts_type_time", "workspace_id", "type", "occur_time"),
    # Experiments: the exposures of one experiment.
    Index("ix_facts_experiment", "workspace_id", "experiment_id", "profile_id"),
)

# One row per message, kept up to date as its facts arrive: the attributes some fact of the
# message carried, and when each outcome FIRST happened. The channel report is then one GROUP BY
# over the messages of a journey instead of a join of every message fact with every other.
messages = Table(
    "messages",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    # The message id, or the fact id for a message fact that carried none.
    Column("message_key", String(MAX_ID_LENGTH), nullable=False),
    _text("journey_id"),
    Column("channel", Integer, nullable=False, default=0, server_default=text("0")),
    _text("content_key"),
    _text("variant"),
    Column("sent_time", UtcDateTime, nullable=True),
    Column("delivered_time", UtcDateTime, nullable=True),
    Column("opened_time", UtcDateTime, nullable=True),
    Column("clicked_time", UtcDateTime, nullable=True),
    Column("bounced_time", UtcDateTime, nullable=True),
    Column("unsubscribed_time", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("workspace_id", "message_key"),
    Index("ix_messages_journey", "workspace_id", "journey_id"),
)

# Identity merges, flattened: each profile merged away -> the profile that stands for the person
# now (its last survivor, whatever order the merges arrived in). Reports that count people
# read a fact's person as coalesce(survivor, profile_id) through this table, so facts recorded
# before the merge move with it.
profile_aliases = Table(
    "profile_aliases",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("merged_profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("survivor_profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    PrimaryKeyConstraint("workspace_id", "merged_profile_id"),
    # Re-pointing a chain (the aliases whose survivor was just merged away) and the ids merged
    # into a person. Survivor first: an index led by workspace_id alone looked as good as the
    # primary key to a planner without statistics, which then scanned the workspace's aliases
    # for every fact instead of probing the key.
    Index("ix_profile_aliases_survivor", "survivor_profile_id", "workspace_id"),
)
