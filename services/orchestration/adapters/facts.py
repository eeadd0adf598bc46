"""Facts for analytics: the one place a FactRecord becomes an analytics Fact and is queued in
the outbox of the use-case's transaction (cjo_platform.facts forwards it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from cjo.analytics.v1 import fact_pb2
from cjo_orchestration.domain.enrollment import FactKind, FactRecord
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.facts import FACTS_TOPIC
from cjo_platform.protobuf import to_timestamp

# Analytics' fact types are growing in parallel: a kind whose type analytics does not define yet
# is not sent (analytics could not count it), and is sent as soon as the type exists.
_TYPE_NAMES = {
    FactKind.JOURNEY_ENTERED: ("FACT_TYPE_JOURNEY_ENTERED",),
    FactKind.MESSAGE_REQUESTED: ("FACT_TYPE_MESSAGE_REQUESTED",),
    FactKind.JOURNEY_EXITED: ("FACT_TYPE_JOURNEY_EXITED",),
    FactKind.NODE_VISITED: ("FACT_TYPE_NODE_VISITED",),
    FactKind.GOAL_REACHED: ("FACT_TYPE_GOAL_REACHED", "FACT_TYPE_CONVERTED",
                            "FACT_TYPE_CONVERSION"),
    FactKind.NODE_FAILED: ("FACT_TYPE_NODE_FAILED",),
    FactKind.EXPERIMENT_EXPOSED: ("FACT_TYPE_EXPERIMENT_EXPOSED",),
}
_TYPES: dict[FactKind, str] = {}  # by enum value name, which the constructor accepts
for _kind, _names in _TYPE_NAMES.items():
    for _name in _names:
        if _name in fact_pb2.FactType.DESCRIPTOR.values_by_name:
            _TYPES[_kind] = _name
            break
_FIELDS = fact_pb2.Fact.DESCRIPTOR.fields_by_name
_CHANNELS = {"email": "CHANNEL_EMAIL", "sms": "CHANNEL_SMS", "push": "CHANNEL_PUSH",
             "in_app": "CHANNEL_IN_APP", "webhook": "CHANNEL_WEBHOOK"}


# Fields every fact carries, taken from the record as they are (proto3 drops empty strings).
_COMMON = tuple(name for name in ("fact_id", "profile_id", "journey_id", "enrollment_id",
                                  "message_id", "node_id", "journey_version")
                if name in _FIELDS)


@lru_cache(maxsize=64)
def _occur_time_field(when: datetime) -> bytes:
    """A Fact holding only ``occur_time``, serialised. The facts of one batch share their time:
    it is converted and encoded once and appended to each fact's other fields (a message's
    fields may come in any order, so the bytes parse as the one Fact); building the Timestamp
    into every Fact was about half of a fact's encoding."""
    encoded: bytes = fact_pb2.Fact(occur_time=to_timestamp(when)).SerializeToString()
    return encoded


def encode(fact: FactRecord) -> bytes | None:
    kind = _TYPES.get(fact.kind)
    if kind is None:
        return None
    fields: dict[str, Any] = {name: getattr(fact, name) for name in _COMMON}
    if fact.extra:
        fields.update(fact.extra)
        if "channel" in fields:
            fields["channel"] = _CHANNELS.get(str(fields["channel"]), "CHANNEL_UNSPECIFIED")
        # Only the fields analytics' Fact defines (its contract grows in parallel); times
        # (conversion_deadline) as timestamps.
        fields = {k: to_timestamp(v) if isinstance(v, datetime) else v
                  for k, v in fields.items() if k in _FIELDS and v is not None}
    if fact.kind is FactKind.JOURNEY_EXITED and "exit_reason" in _FIELDS:
        fields["exit_reason"] = fact.detail
    payload: bytes = fact_pb2.Fact(type=kind, **fields).SerializeToString()
    return payload + _occur_time_field(fact.occur_time)


def publish(uow: UnitOfWork, facts: Sequence[FactRecord]) -> None:
    """Queue facts in the unit of work's transaction, one outbox insert per workspace."""
    by_workspace: dict[str, list[tuple[bytes, str]]] = {}
    for fact in facts:
        payload = encode(fact)
        if payload is None:
            continue
        by_workspace.setdefault(fact.workspace_id, []).append((payload, fact.traceparent))
    for workspace_id, payloads in by_workspace.items():
        uow.publish(FACTS_TOPIC, workspace_id, payloads)
