"""Tables of the delivery database."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from cjo_delivery.domain.sending import MAX_PROVIDER_MESSAGE_ID_LENGTH
from cjo_platform.db import UtcDateTime
from cjo_platform.limits import (
    MAX_ID_LENGTH,
    MAX_PROFILE_ID_LENGTH,
    MAX_TOPIC_LENGTH,
    MAX_WORKSPACE_ID_LENGTH,
)
from cjo_platform.service import shared_tables

metadata = MetaData()
# Messages not final yet: what a profile's next message may wait for.
PENDING = "status IN ('queued', 'deferred', 'sending')"
# Messages queued behind an earlier one of their profile on their channel (not claimable).
HELD = "status = 'held'"
outbox, request_log = shared_tables(metadata)

messages = Table(
    "messages",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("idempotency_key", String(MAX_ID_LENGTH), nullable=False),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False, default=""),
    Column("address", String(320), nullable=False),
    Column("channel", String(16), nullable=False),
    # The serialized cjo.common.v1.RenderedMessage, exactly as the caller sent it.
    Column("content", LargeBinary, nullable=False),
    Column("journey_id", String(MAX_ID_LENGTH), nullable=False, default=""),
    Column("enrollment_id", String(MAX_ID_LENGTH), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", String(1024), nullable=False, default=""),
    Column("provider_message_id", String(MAX_PROVIDER_MESSAGE_ID_LENGTH), nullable=False,
           default=""),
    # When a QUEUED message is due; NULL once it is SENT or FAILED.
    Column("next_attempt_time", UtcDateTime, nullable=True),
    # Until when a SENDING message belongs to the sender that claimed it.
    Column("lease_until", UtcDateTime, nullable=True),
    Column("traceparent", String(64), nullable=False, default=""),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    Column("topic", String(MAX_TOPIC_LENGTH), nullable=False, server_default=""),
    # Transactional messages skip consent, frequency caps and quiet hours.
    Column("transactional", Boolean, nullable=False, server_default="0"),
    # The recipient's IANA time zone for quiet hours; empty: the policy's default.
    Column("time_zone", String(64), nullable=False, server_default=""),
    # When a provider accepted the message: what frequency caps count.
    Column("sent_time", UtcDateTime, nullable=True),
    # The provider that accepted it.
    Column("provider_id", String(64), nullable=False, server_default=""),
    # When this SENDING message took a slot of its profile's frequency cap (the reservation
    # every replica counts until the message is SENT, then sent_time counts); NULL otherwise.
    Column("cap_time", UtcDateTime, nullable=True),
    # The decisioning decision the message carries out ("" for none): on its facts, and its
    # SENT fact goes to decisioning as the decision's exposure.
    Column("decision_id", String(MAX_ID_LENGTH), nullable=False, server_default=""),
    # When retention (CJO_DELIVERY_RETENTION_MESSAGE_BODIES_DAYS) removed the rendered body from
    # ``content`` (the content key, version, locale and variant stay); NULL while it is there.
    Column("body_removed_time", UtcDateTime, nullable=True),
    # The order messages were queued in (migration 0014: a sequence's next value on
    # PostgreSQL, the rowid on SQLite, set by the database at insert; a trigger on SQLite, which
    # a migration recreating this table must create again). The sender claims each profile's
    # messages in this order. NULL only for messages already final before the migration.
    Column("queue_order", BigInteger, nullable=True),
    # The sender process holding a SENDING message's lease (its token): its own messages under
    # way do not hold up the profile's next ones in its claims, which it orders itself.
    Column("lease_holder", String(32), nullable=False, server_default=""),
    # How many times the message's lease ran out while it was SENDING (its sender stopped, or
    # could not record its outcome), counted by the claim that took it over (migration 0016):
    # at CJO_DELIVERY_MAX_LEASE_EXPIRIES it is failed instead of sent again.
    Column("lease_expiries", Integer, nullable=False, server_default="0"),
    # A later message of its profile on its channel is HELD behind this unfinished one (migration
    # 0017): its final outcome releases them. Set by queue_messages, which holds the row's lock
    # until it commits, so a sender recording the outcome meanwhile sees it.
    Column("holds", Boolean, nullable=False, server_default="0"),
    PrimaryKeyConstraint("workspace_id", "message_id"),
    UniqueConstraint("workspace_id", "idempotency_key", name="uq_messages_idempotency_key"),
    # The sender's claim query: due QUEUED messages and SENDING ones whose lease ran out.
    Index("ix_messages_due", "status", "next_attempt_time"),
    Index("ix_messages_lease", "status", "lease_until"),
    # The claim: messages not final yet in queue order (it stops at its limit instead of
    # sorting every due message), and its check that no message of the profile queued
    # earlier is in the way.
    Index("ix_messages_queue", "queue_order",
          postgresql_where=text(PENDING), sqlite_where=text(PENDING)),
    Index("ix_messages_pending", "workspace_id", "profile_id", "queue_order",
          postgresql_where=text(PENDING), sqlite_where=text(PENDING)),
    # HELD messages by their scope, in queue order: what a final outcome releases.
    Index("ix_messages_held", "workspace_id", "profile_id", "channel", "queue_order",
          postgresql_where=text(HELD), sqlite_where=text(HELD)),
    # ListMessages, newest first, for the workspace, a profile or a journey.
    Index("ix_messages_recent", "workspace_id", "create_time", "message_id"),
    Index("ix_messages_profile", "workspace_id", "profile_id", "create_time"),
    Index("ix_messages_journey", "workspace_id", "journey_id", "create_time"),
    Index("ix_messages_status", "workspace_id", "status", "create_time"),
    # Frequency caps: a profile's recent sends on a channel.
    Index("ix_messages_sends", "workspace_id", "profile_id", "channel", "sent_time"),
    # Provider reports: a message by the id its provider answered the send with, and a push
    # by the device token it went to (adapters/webhook_store.py).
    Index("ix_messages_provider_message", "workspace_id", "provider_message_id"),
    Index("ix_messages_address", "workspace_id", "address", "channel", "sent_time"),
    # Retention: the oldest messages whose body is still stored.
    Index("ix_messages_bodies", "create_time", postgresql_where=text("body_removed_time IS NULL"),
          sqlite_where=text("body_removed_time IS NULL")),
)

providers = Table(
    "providers",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("provider_id", String(64), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("display_name", String(256), nullable=False, default=""),
    # JSON objects of strings. Secrets are never returned by the API nor logged.
    Column("config", Text, nullable=False),
    Column("secrets", Text, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("etag", String(64), nullable=False),
    # Signed into the provider's status webhook URL; a new one (UpdateProvider with
    # status_webhook_url in its mask) ends the old URL. "" for providers from before it.
    Column("webhook_nonce", String(32), nullable=False, server_default=""),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "provider_id"),
    Index("ix_providers_channel", "workspace_id", "channel", "priority"),
)

# One row per workspace: its DeliveryPolicy as JSON.
policies = Table(
    "policies",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("policy", Text, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id"),
)

# Addresses that bounced or complained: nothing more is sent to them on that channel.
suppressions = Table(
    "suppressions",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("address", String(320), nullable=False),
    Column("reason", String(1024), nullable=False),
    Column("create_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "channel", "address"),
)

# The in-app inbox: one row per in-app message, per profile.
inbox_messages = Table(
    "inbox_messages",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    # The serialized cjo.common.v1.RenderedInApp.
    Column("content", LargeBinary, nullable=False),
    Column("state", String(16), nullable=False),
    Column("journey_id", String(MAX_ID_LENGTH), nullable=False, default=""),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "message_id"),
    Index("ix_inbox_profile", "workspace_id", "profile_id", "create_time", "message_id"),
    # Retention deletes in-app messages by age (CJO_DELIVERY_RETENTION_INBOX_MESSAGES_DAYS).
    Index("ix_inbox_messages_created", "create_time"),
)

# Provider rate limits shared by every sender replica: per rate-limited provider, the GCRA's
# theoretical arrival time (domain/ratelimit.py) and the latest turn handed to a refused message.
provider_rates = Table(
    "provider_rates",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("provider_id", String(64), nullable=False),
    Column("tat", UtcDateTime, nullable=False),
    Column("promised", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("workspace_id", "provider_id"),
)

# One row per (workspace, profile, channel) a frequency cap applies to: the lock a send round
# holds while it counts the profile's sends and reserves slots, so replicas take turns.
cap_locks = Table(
    "cap_locks",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("channel", String(16), nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id", "channel"),
)

# Circuit breakers shared by every sender replica (domain/breaker.py): per provider (the
# workspace "" for the deployment's SMTP server and the inbox), its consecutive failures,
# until when it is open and until when a half-open breaker's one trial call is out.
provider_breakers = Table(
    "provider_breakers",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("provider_id", String(64), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("open_until", UtcDateTime, nullable=True),
    Column("trial_until", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("workspace_id", "provider_id"),
)

# Providers whose call for a message failed but that may have taken it (a late answer, an error
# after the content went; a failover then sent it through another, or a retry will): their
# reports about it are found (adapters/webhook_store.py), as the one that took it is by
# messages.provider_id. Written before the outcome is recorded, only for such calls.
message_providers = Table(
    "message_providers",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("provider_id", String(64), nullable=False),
    PrimaryKeyConstraint("workspace_id", "message_id", "provider_id"),
)

# One-time tokens of signed provider reports already recorded (Mailgun's ``token``), per
# provider, until the report's replay window ends: the primary key makes exactly one of two
# reports carrying a token win, on any replica, in the transaction that records its events.
webhook_tokens = Table(
    "webhook_tokens",
    metadata,
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("provider_id", String(64), nullable=False),
    Column("token", String(256), nullable=False),
    Column("expire_time", UtcDateTime, nullable=False),
    # The recorded report's content: a retry of it carries the same (see OneTimeToken).
    Column("content_digest", String(64), nullable=False, server_default=""),
    PrimaryKeyConstraint("workspace_id", "provider_id", "token"),
    Index("ix_webhook_tokens_expiry", "workspace_id", "provider_id", "expire_time"),
)
