"""Tables of the content database."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

from cjo_platform.db import UtcDateTime
from cjo_platform.limits import MAX_WORKSPACE_ID_LENGTH
from cjo_platform.service import shared_tables

metadata = MetaData()
outbox, request_log = shared_tables(metadata)

content_items = Table(
    "content_items",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("key", String(128), nullable=False),
    Column("display_name", String(256), nullable=False, default=""),
    Column("tags", JSON, nullable=False),
    # {"subject", "preheader", "html", "text"}; NULL when the item has no email body.
    Column("email", JSON(none_as_null=True), nullable=True),
    Column("revision", BigInteger, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    # The other channel bodies and the missing-variable policy of the draft:
    # {"sms": {...}, "push": {...}, "in_app": {...}, "webhook": {...}, "missing_variables": ...}.
    Column("channels", JSON(none_as_null=True), nullable=True),
    # Latest published version; 0 while never published.
    Column("latest_version", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("workspace_id", "key"),
)

# Immutable published versions: the whole draft and the snippets it includes, frozen.
content_versions = Table(
    "content_versions",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("key", String(128), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("document", JSON, nullable=False),
    Column("snippets", JSON, nullable=False),
    # sha256 of document + snippets: identifies compiled templates in caches across replicas.
    Column("fingerprint", String(64), nullable=False),
    Column("rolled_back_from", BigInteger, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "key", "version"),
)

snippets = Table(
    "snippets",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("key", String(128), nullable=False),
    Column("source", Text, nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)

# One row per workspace that changed its content settings; no row means the defaults.
content_settings = Table(
    "content_settings",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("default_locale", String(64), nullable=False),
    Column("revision", BigInteger, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id"),
)
