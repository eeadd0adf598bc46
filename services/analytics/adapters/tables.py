"""Tables of the analytics database."""

from sqlalchemy import Column, Index, MetaData, PrimaryKeyConstraint, String, Table

from cjo_platform.db import UtcDateTime
from cjo_platform.service import shared_tables

metadata = MetaData()
outbox, request_log = shared_tables(metadata)

facts = Table(
    "facts",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("fact_id", String(128), nullable=False),
    Column("type", String(32), nullable=False),
    Column("profile_id", String(64), nullable=False),
    Column("journey_id", String(128), nullable=False, default=""),
    Column("enrollment_id", String(64), nullable=False, default=""),
    Column("message_id", String(64), nullable=False, default=""),
    Column("occur_time", UtcDateTime, nullable=False),
    Column("record_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "fact_id"),
    Index("ix_facts_journey", "workspace_id", "journey_id", "type"),
)
