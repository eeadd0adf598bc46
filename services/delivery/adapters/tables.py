"""Tables of the delivery database."""

from sqlalchemy import (
    Column,
    Index,
    Integer,
    LargeBinary,
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

messages = Table(
    "messages",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("idempotency_key", String(128), nullable=False),
    Column("profile_id", String(128), nullable=False, default=""),
    Column("address", String(320), nullable=False),
    Column("channel", String(16), nullable=False),
    # The serialized cjo.common.v1.RenderedMessage, exactly as the caller sent it.
    Column("content", LargeBinary, nullable=False),
    Column("journey_id", String(128), nullable=False, default=""),
    Column("enrollment_id", String(128), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", String(1024), nullable=False, default=""),
    Column("provider_message_id", String(256), nullable=False, default=""),
    # When a QUEUED message is due; NULL once it is SENT or FAILED.
    Column("next_attempt_time", UtcDateTime, nullable=True),
    # Until when a SENDING message belongs to the sender that claimed it.
    Column("lease_until", UtcDateTime, nullable=True),
    Column("traceparent", String(64), nullable=False, default=""),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "message_id"),
    UniqueConstraint("workspace_id", "idempotency_key", name="uq_messages_idempotency_key"),
    # The sender's claim query: due QUEUED messages and SENDING ones whose lease ran out.
    Index("ix_messages_due", "status", "next_attempt_time"),
    Index("ix_messages_lease", "status", "lease_until"),
    # ListMessages, newest first, for the workspace, a profile or a journey.
    Index("ix_messages_recent", "workspace_id", "create_time", "message_id"),
    Index("ix_messages_profile", "workspace_id", "profile_id", "create_time"),
    Index("ix_messages_journey", "workspace_id", "journey_id", "create_time"),
)
