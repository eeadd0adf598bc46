"""Tables of the content database."""

from sqlalchemy import JSON, BigInteger, Column, MetaData, PrimaryKeyConstraint, String, Table

from cjo_platform.db import UtcDateTime
from cjo_platform.service import shared_tables

metadata = MetaData()
outbox, request_log = shared_tables(metadata)

content_items = Table(
    "content_items",
    metadata,
    Column("workspace_id", String(64), nullable=False),
    Column("key", String(128), nullable=False),
    Column("display_name", String(256), nullable=False, default=""),
    Column("tags", JSON, nullable=False),
    # {"subject", "preheader", "html", "text"}; NULL when the item has no email body.
    Column("email", JSON(none_as_null=True), nullable=True),
    Column("revision", BigInteger, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)
