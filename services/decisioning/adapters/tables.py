"""Tables of the decisioning database.

Every table is keyed by workspace first (and by profile where a row belongs to a person), so a
distributed PostgreSQL-compatible engine can shard them."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)

from cjo_platform.db import UtcDateTime
from cjo_platform.limits import MAX_ID_LENGTH, MAX_PROFILE_ID_LENGTH, MAX_WORKSPACE_ID_LENGTH
from cjo_platform.service import shared_tables

metadata = MetaData()
outbox, request_log = shared_tables(metadata)

MAX_ACTION_KEY_LENGTH = 64
MAX_POINT_KEY_LENGTH = 128

def _workspace() -> Column[str]:
    return Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False)

# An action (offer): its definition as the JSON of domain.catalogue.Action, and how many times
# it was exposed over its life (its budget is checked against this counter, shared by replicas).
actions = Table(
    "actions",
    metadata,
    _workspace(),
    Column("key", String(MAX_ACTION_KEY_LENGTH), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("exposures", BigInteger, nullable=False, server_default=text("0")),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)

# A decision point: its definition as the JSON of domain.catalogue.DecisionPoint, and the
# errors of its reward filter and formulas at run time (shown on the point).
decision_points = Table(
    "decision_points",
    metadata,
    _workspace(),
    Column("key", String(MAX_POINT_KEY_LENGTH), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("etag", String(64), nullable=False),
    Column("error_count", BigInteger, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=False, server_default=""),
    Column("last_error_time", UtcDateTime, nullable=True),
    Column("create_time", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "key"),
)

# One learned model per (point, action): a diagonal Gaussian posterior over the weights of a
# Bayesian logistic regression on hashed features (domain.model), as float64 arrays. `version`
# grows with every update, so replicas reload a model only when it changed.
models = Table(
    "models",
    metadata,
    _workspace(),
    Column("decision_point", String(MAX_POINT_KEY_LENGTH), nullable=False),
    Column("action", String(MAX_ACTION_KEY_LENGTH), nullable=False),
    Column("mean", LargeBinary, nullable=False),
    Column("precision", LargeBinary, nullable=False),
    Column("observations", BigInteger, nullable=False, server_default=text("0")),
    Column("rewards", BigInteger, nullable=False, server_default=text("0")),
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "decision_point", "action"),
)

# Decision outcomes (DecisionOutcome numbers): pending -> exposed -> rewarded | not rewarded;
# no_action for a decision without an eligible action.
PENDING, EXPOSED, REWARDED, NOT_REWARDED, NO_ACTION = 1, 2, 3, 4, 5

# The decision log: every decision with what off-policy evaluation and learning need (the
# candidates with their propensities and pick probabilities, the features), and its outcome.
decisions = Table(
    "decisions",
    metadata,
    _workspace(),
    Column("decision_id", String(MAX_ID_LENGTH), nullable=False),
    Column("decision_point", String(MAX_POINT_KEY_LENGTH), nullable=False),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    # The action ranked first ("" when none was eligible) and the probability it was picked.
    Column("action", String(MAX_ACTION_KEY_LENGTH), nullable=False, server_default=""),
    Column("pick_probability", Float, nullable=False, server_default=text("0")),
    Column("control", Boolean, nullable=False, server_default=false()),
    # Idempotency of Decide / BatchDecide items ("" when the caller gave none).
    Column("request_id", String(MAX_ID_LENGTH), nullable=False, server_default=""),
    Column("decide_time", UtcDateTime, nullable=False),
    # Whole hours since the Unix epoch of decide_time, for the traffic buckets.
    Column("decide_hour", BigInteger, nullable=False),
    # Every eligible candidate, best first, not only the returned ones (off-policy
    # evaluation): compact, {"a": [actions], "p": [propensities], "s", "q", "v", "l", "w",
    # "n", "m", "r", "o"} (service_layer.decide, COMPACT_KEYS); logs written before hold
    # [{action, propensity, score, pick_probability, value, lever, context_weight, ...}].
    Column("candidates", JSON, nullable=False),
    Column("ineligible", JSON, nullable=False),
    # The hashed features the model saw: {"i": [indices], "v": [values]}.
    Column("features", JSON, nullable=False),
    Column("context", JSON, nullable=False),
    Column("outcome", SmallInteger, nullable=False),
    Column("expose_time", UtcDateTime, nullable=True),
    # End of the reward window (expose_time + the point's window), set on exposure.
    Column("reward_deadline", UtcDateTime, nullable=True),
    Column("reward_time", UtcDateTime, nullable=True),
    Column("reward_event_id", String(MAX_ID_LENGTH), nullable=False, server_default=""),
    # True once the outcome (rewarded or not) was applied to the model; the learning worker
    # claims rewarded / lapsed decisions that are not yet learned.
    Column("learned", Boolean, nullable=False, server_default=false()),
    # Lease of the learning worker that claimed it (replicas share the work).
    Column("lease_owner", String(64), nullable=False, server_default=""),
    Column("lease_until", UtcDateTime, nullable=True),
    PrimaryKeyConstraint("workspace_id", "decision_id"),
    # One decision per request id at a point: a concurrent repeat loses the insert, and its
    # unit of work runs again and reads the winner's decision.
    Index("ux_decisions_request", "workspace_id", "decision_point", "request_id", unique=True,
          postgresql_where=text("request_id <> ''"), sqlite_where=text("request_id <> ''")),
    # A person's decisions: rewards (the exposed decisions whose window is open), contact
    # limits (exposures of an action in a period), erasure and ListDecisions by person. The
    # only index keyed by person: each such index takes a random key per logged decision,
    # which on a large log is a page written per decision (two of them, by outcome and by
    # action, cost a fifth of BatchDecide's CPU after 100,000 decisions).
    Index("ix_decisions_person", "workspace_id", "profile_id", "outcome", "action",
          "expose_time"),
    # Reports and evaluation: a point's decisions over time.
    Index("ix_decisions_point_time", "workspace_id", "decision_point", "decide_time"),
    # The learning worker: lapsed windows and rewards not yet learned.
    Index("ix_decisions_learning", "learned", "outcome", "reward_deadline"),
    # Retention deletes settled decisions by age (CJO_DECISIONING_RETENTION_DECISIONS_DAYS).
    Index("ix_decisions_decided", "decide_time"),
)

# Opens and clicks per person, channel and hour of the day (UTC): what best send times are
# learned from. profile_id "" holds the workspace's totals (the population).
engagement_hours = Table(
    "engagement_hours",
    metadata,
    _workspace(),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("channel", Integer, nullable=False),
    Column("hour", SmallInteger, nullable=False),
    Column("engagements", BigInteger, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("workspace_id", "profile_id", "channel", "hour"),
)

# What identity and delivery forwarded, by id, so a re-sent event or fact is taken once; kept
# for CJO_DECISIONING_RECEIVED_RETENTION_HOURS (a forwarder re-sends within minutes).
received = Table(
    "received",
    metadata,
    _workspace(),
    Column("source_id", String(MAX_ID_LENGTH + 16), nullable=False),
    Column("receive_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "source_id"),
    # The learning worker prunes ids older than the retention (service_layer.learning).
    Index("ix_received_time", "receive_time"),
)

# Profiles merged into another (identity's profile_merged): a reward of the survivor finds
# the decisions of the merged profile.
profile_aliases = Table(
    "profile_aliases",
    metadata,
    _workspace(),
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("survivor_profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("merge_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "profile_id"),
    Index("ix_profile_aliases_survivor", "workspace_id", "survivor_profile_id"),
)


# A point's reward event that reached us before its decision's exposure (delivery's SENT fact
# and identity's event come on different topics): one row per (pending decision of the person
# whose filter it matched, event), taken when the decision is exposed (the exposure's window
# holds the event: the decision is rewarded, the event rewards nothing else at the point), and
# forgotten CJO_DECISIONING_RECEIVED_RETENTION_HOURS after the latest window that could hold it
# (expire_time: the event's time + the point's window).
early_rewards = Table(
    "early_rewards",
    metadata,
    _workspace(),
    Column("decision_id", String(MAX_ID_LENGTH), nullable=False),
    Column("event_id", String(MAX_ID_LENGTH), nullable=False),
    Column("decision_point", String(MAX_POINT_KEY_LENGTH), nullable=False),
    # The decision's profile, for an erasure.
    Column("profile_id", String(MAX_PROFILE_ID_LENGTH), nullable=False),
    Column("event_time", UtcDateTime, nullable=False),
    Column("expire_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("workspace_id", "decision_id", "event_id"),
    Index("ix_early_rewards_event", "workspace_id", "event_id"),
    Index("ix_early_rewards_expire", "expire_time"),
)

# The forwarding watermark of each stream decisioning learns from (domain.watermarks): the row
# of workspace "" is the stream's own (every workspace not listed), the other rows the
# workspaces reported behind it. Rewritten by each report (RecordForwardingWatermark).
forwarding_watermarks = Table(
    "forwarding_watermarks",
    metadata,
    Column("stream", String(32), nullable=False),
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("delivered_before", UtcDateTime, nullable=False),
    # When decisioning took the report (its own clock), for operators.
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("stream", "workspace_id"),
)

# With the event bus, the latest watermark marker of each partition of a stream (its row of
# workspace "" and a row per workspace behind it), folded into the stream's forwarding_watermarks
# once every partition has reported (domain.watermarks.fold).
bus_watermarks = Table(
    "bus_watermarks",
    metadata,
    Column("stream", String(32), nullable=False),
    Column("bus_partition", Integer, nullable=False),
    Column("workspace_id", String(MAX_WORKSPACE_ID_LENGTH), nullable=False),
    Column("delivered_before", UtcDateTime, nullable=False),
    Column("update_time", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("stream", "bus_partition", "workspace_id"),
)
