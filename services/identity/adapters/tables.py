"""Tables of the identity database."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ColumnElement,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    cast,
    literal,
    or_,
)

from cjo_identity.domain.events import SUBSCRIBED, UNSUBSCRIBED, EventType
from cjo_platform.db import UtcDateTime
from cjo_platform.limits import MAX_ID_LENGTH, MAX_WORKSPACE_ID_LENGTH
from cjo_platform.service import shared_tables

metadata = MetaData()
outbox, request_log = shared_tables(metadata)

# Plain JSON on both dialects: nothing queries inside these documents yet. (JSONB would need
# the shared revision template to import the postgresql dialect.)
Json = JSON()

# Percent of each page of profiles PostgreSQL fills on insert (see the table).
PROFILES_FILLFACTOR = 80

workspaces = Table(
    "workspaces",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), primary_key=True),
    Column("display_name", String(200), nullable=False, default=""),
    Column("create_time", UtcDateTime, nullable=False),
)

# Keys are looked up by key_id alone (it is part of the secret), hence not keyed by workspace.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("display_name", String(200), nullable=False, default=""),
    Column("secret_hash", String(64), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    # ApiKeyScope's number; keys from before scopes are ADMIN (1).
    Column("scope", Integer, nullable=False, default=1, server_default="1"),
    Column("secret_hint", String(64), nullable=False, default="", server_default=""),
    # The secret a rotation replaced, accepted until its expiry (then ignored, never cleaned).
    Column("previous_secret_hash", String(64), nullable=True),
    Column("previous_secret_expire_time", UtcDateTime, nullable=True),
    Column("revoke_time", UtcDateTime, nullable=True),
    Column("last_use_time", UtcDateTime, nullable=True),
    Index("ix_api_keys_workspace", "workspace_id"),
)

profiles = Table(
    "profiles",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("profile_id", String(32), nullable=False),
    Column("traits", Json, nullable=False),  # name -> value
    # name -> provenance {"t": event time (ISO 8601), "m": message id, "s": source}; rows
    # written before provenance hold the event time string alone.
    Column("trait_times", Json, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    # [{"channel", "topic", "subscribed", "t", "m", "s"}]; NULL: nothing said yet.
    Column("consents", Json, nullable=True),
    Column("computed", Json, nullable=True),  # computed trait name -> value
    # When a windowed computed trait next changes with no new event (an event leaves its
    # window, or a future-dated one enters it); NULL: never. The time worker claims due rows.
    Column("recompute_due", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
    Index("ix_profiles_recompute_due", "recompute_due"),
    # Every event rewrites its profile's row (its update time at least): on PostgreSQL a page
    # kept 20% free takes the new row version on the same page, a HOT update that writes no
    # index entry (at the default 100 ~1% were; a 1,000-event batch's UPDATE cost ~45% less
    # server CPU, docs/capacity-journal.md). Revision 0013; SQLite updates in place.
    postgresql_with={"fillfactor": PROFILES_FILLFACTOR},
)

# The identity graph: each identifier belongs to exactly one profile of its workspace.
identifiers = Table(
    "identifiers",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("type", String(16), nullable=False),
    Column("value", String(256), nullable=False),
    Column("profile_id", String(32), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    # The identifiers connected when limits are ignored (see domain/graph.py). Nullable only
    # because the column was added to a filled table; revision 0002 fills it.
    Column("cluster_id", String(32), nullable=True),
    PrimaryKeyConstraint("workspace_id", "type", "value"),
    Index("ix_identifiers_profile", "workspace_id", "profile_id"),
    Index("ix_identifiers_cluster", "workspace_id", "cluster_id"),
)

# Distinct identifier sets seen together in an event, with the earliest such event: the edges
# the partition into profiles is computed from.
edges = Table(
    "edges",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("edge_key", String(40), nullable=False),  # sha1 of the sorted identifiers
    Column("cluster_id", String(32), nullable=False),
    Column("identifiers", Json, nullable=False),  # [[type, value], ...]
    Column("first_time", UtcDateTime, nullable=False),
    Column("first_message_id", String(MAX_ID_LENGTH), nullable=False),
    PrimaryKeyConstraint("workspace_id", "edge_key"),
    Index("ix_edges_cluster", "workspace_id", "cluster_id"),
)

# Profiles merged away; their ids resolve to the survivor (kept flat: always the final one).
profile_merges = Table(
    "profile_merges",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("merged_profile_id", String(32), nullable=False),
    Column("survivor_profile_id", String(32), nullable=False),
    Column("identifier_type", String(16), nullable=False),
    Column("identifier_value", String(256), nullable=False),
    Column("message_id", String(MAX_ID_LENGTH), nullable=False),
    Column("merge_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "merged_profile_id"),
    Index("ix_profile_merges_survivor", "workspace_id", "survivor_profile_id"),
)

identity_settings = Table(
    "identity_settings",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), primary_key=True),
    Column("settings", Json, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("message_id", String(MAX_ID_LENGTH), nullable=False),
    Column("profile_id", String(32), nullable=False),
    Column("type", String(16), nullable=False),
    Column("name", String(128), nullable=False, default=""),
    Column("identifiers", Json, nullable=False),  # [[type, value], ...] as normalised
    Column("properties", Json, nullable=False),
    Column("traits", Json, nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Column("source", String(64), nullable=False, default=""),
    Column("receive_time", UtcDateTime, nullable=False),
    # The sender's time when identity replaced it (domain/events.corrected_time); else NULL.
    Column("original_timestamp", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("workspace_id", "event_id"),
    # Deduplication: a source's message id is applied once per workspace.
    UniqueConstraint("workspace_id", "message_id", name="uq_events_message"),
    Index("ix_events_profile_time", "workspace_id", "profile_id", "timestamp", "event_id"),
)


def _inline(value: str) -> ColumnElement[str]:
    return literal(value, String, literal_execute=True)


def events_removable() -> ColumnElement[bool]:
    """Events no golden record is folded from (domain/golden.apply_event reads an event's
    traits, and consent from track events named subscribed / unsubscribed): only these may be
    deleted by retention, so a record refolded from the events left (a split) is the same.
    ``traits`` is JSON text on both databases (plain JSON, not JSONB), an empty mapping written
    as ``{}`` (cjo_platform.db.json_columns.encode_json); any other text is kept, the safe
    side.

    The constants are written into the statement, not bound: a planner uses the partial index
    below only when it can see that the query's condition is its predicate."""
    return and_(cast(events.c.traits, Text) == _inline("{}"),
                or_(events.c.type != _inline(EventType.TRACK.value),
                    and_(events.c.name != _inline(SUBSCRIBED),
                         events.c.name != _inline(UNSUBSCRIBED))))


# Retention (CJO_IDENTITY_RETENTION_EVENTS_DAYS) deletes the oldest received first, among the
# removable events only: the kept ones (traits, consent) are not in it, so a batch never walks
# past them however many pile up (migration 0014).
Index("ix_events_removable", events.c.receive_time,
      postgresql_where=events_removable(), sqlite_where=events_removable())

segments = Table(
    "segments",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("segment_id", String(64), nullable=False),
    Column("display_name", String(200), nullable=False, default=""),
    Column("condition", String(4096), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    # Evaluation health (see domain/segments.py): "active" or "invalid", errors since the
    # condition was set, errors since the last success, and the last error.
    Column("state", String(16), nullable=False, server_default="active"),
    Column("error_count", BigInteger, nullable=False, server_default="0"),
    Column("consecutive_errors", Integer, nullable=False, server_default="0"),
    Column("last_error", String(1000), nullable=True),
    Column("last_error_time", UtcDateTime, nullable=True),
    Column("last_error_profile_id", String(32), nullable=True),
    Column("update_time", UtcDateTime, nullable=True),  # NULL: never updated
    Column("etag", String(32), nullable=True),  # NULL: rows created before etags
    PrimaryKeyConstraint("workspace_id", "segment_id"),
)

# Bumped by every write of a workspace's segments (definitions, state, error counts): a
# process keeps the active segments it read with the revision they were read at, and reads
# them again only when the revision moved (any replica's write moves it).
segment_revisions = Table(
    "segment_revisions",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), primary_key=True),
    Column("revision", BigInteger, nullable=False),
)

segment_members = Table(
    "segment_members",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("segment_id", String(64), nullable=False),
    Column("profile_id", String(32), nullable=False),
    Column("enter_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "segment_id", "profile_id"),
    Index("ix_segment_members_profile", "workspace_id", "profile_id"),
)

# Background scans of a workspace's profiles (see service_layer/backfills.py): one per segment
# whose condition was set ("segments/<id>") and one for the computed traits ("computed_traits"),
# replaced (cursor back to the start) when its definition changes again.
backfills = Table(
    "backfills",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("target", String(80), nullable=False),
    # What the scan applies: the segment's condition, or a digest of the computed traits'
    # definitions. A chunk whose definition changed since is not written.
    Column("definition", String(4096), nullable=False),
    Column("state", String(16), nullable=False),  # pending, running, done
    Column("cursor", String(32), nullable=False, default=""),  # the last profile id scanned
    Column("profiles_scanned", BigInteger, nullable=False, default=0),
    Column("profiles_total", BigInteger, nullable=False, default=0),
    Column("create_time", UtcDateTime, nullable=False),
    Column("start_time", UtcDateTime, nullable=True),
    Column("end_time", UtcDateTime, nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),  # failed chunks in a row
    Column("last_error", String(1000), nullable=True),
    PrimaryKeyConstraint("workspace_id", "target"),
    Index("ix_backfills_state", "state", "lease_until"),
)

# Identifiers of erased profiles whose owner asked never to be recognised again.
erased_identifiers = Table(
    "erased_identifiers",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("type", String(16), nullable=False),
    Column("value", String(256), nullable=False),
    Column("erase_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "type", "value"),
)
