"""Tables of the identity database."""

from sqlalchemy import (
    JSON,
    Column,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
)

from cjo_platform.db import UtcDateTime
from cjo_platform.service import shared_tables

metadata = MetaData()
outbox, request_log = shared_tables(metadata)

# Plain JSON on both dialects: nothing queries inside these documents yet. (JSONB would need
# the shared revision template to import the postgresql dialect.)
Json = JSON()

workspaces = Table(
    "workspaces",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False, default=""),
    Column("create_time", UtcDateTime, nullable=False),
)

# Keys are looked up by key_id alone (it is part of the secret), hence not keyed by workspace.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("display_name", String(200), nullable=False, default=""),
    Column("secret_hash", String(64), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Index("ix_api_keys_workspace", "workspace_id"),
)

profiles = Table(
    "profiles",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("profile_id", String(32), nullable=False),
    Column("traits", Json, nullable=False),  # name -> value
    Column("trait_times", Json, nullable=False),  # name -> event time (ISO 8601) that set it
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
)

# The identity graph: each identifier belongs to exactly one profile of its workspace.
identifiers = Table(
    "identifiers",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("value", String(256), nullable=False),
    Column("profile_id", String(32), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "type", "value"),
    Index("ix_identifiers_profile", "workspace_id", "profile_id"),
)

events = Table(
    "events",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("message_id", String(128), nullable=False),
    Column("profile_id", String(32), nullable=False),
    Column("type", String(16), nullable=False),
    Column("name", String(128), nullable=False, default=""),
    Column("identifiers", Json, nullable=False),  # [[type, value], ...] as normalised
    Column("properties", Json, nullable=False),
    Column("traits", Json, nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Column("source", String(64), nullable=False, default=""),
    Column("receive_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "event_id"),
    # Deduplication: a source's message id is applied once per workspace.
    UniqueConstraint("workspace_id", "message_id", name="uq_events_message"),
    Index("ix_events_profile_time", "workspace_id", "profile_id", "timestamp", "event_id"),
)
