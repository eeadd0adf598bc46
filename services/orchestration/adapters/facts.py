"""Facts for analytics, written to the outbox in the engine's transactions (forwarded by
cjo_platform.facts)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from cjo.analytics.v1 import fact_pb2
from cjo_orchestration.domain.engine import FactKind, FactRecord
from cjo_platform.db.outbox import Outbox
from cjo_platform.facts import FACTS_TOPIC
from cjo_platform.protobuf import to_timestamp

_TYPES = {
    FactKind.JOURNEY_ENTERED: fact_pb2.FACT_TYPE_JOURNEY_ENTERED,
    FactKind.MESSAGE_REQUESTED: fact_pb2.FACT_TYPE_MESSAGE_REQUESTED,
    FactKind.JOURNEY_EXITED: fact_pb2.FACT_TYPE_JOURNEY_EXITED,
}


def encode(fact: FactRecord) -> bytes:
    return fact_pb2.Fact(
        fact_id=fact.fact_id, type=_TYPES[fact.kind], profile_id=fact.profile_id,
        journey_id=fact.journey_id, enrollment_id=fact.enrollment_id,
        message_id=fact.message_id, occur_time=to_timestamp(fact.occur_time),
    ).SerializeToString()


def publish(session: Session, outbox: Outbox, facts: Sequence[FactRecord]) -> None:
    """Queue facts in the caller's transaction, one outbox insert per workspace."""
    by_workspace: dict[str, list[tuple[bytes, str]]] = {}
    for fact in facts:
        by_workspace.setdefault(fact.workspace_id, []).append((encode(fact), fact.traceparent))
    for workspace_id, payloads in by_workspace.items():
        outbox.add(session, FACTS_TOPIC, workspace_id, payloads)
