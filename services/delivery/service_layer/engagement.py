"""Record an engagement (open, click, unsubscribe, delivery report, bounce) in one transaction:
the message's status, the suppression list, an event for identity and a fact for analytics,
both through the outbox."""

from __future__ import annotations

from cjo_delivery.adapters import engagement_store, repository
from cjo_delivery.adapters.engagement_store import IDENTITY_EVENTS_TOPIC
from cjo_delivery.domain.engagement import Engagement, status_after, suppresses
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.decisioning import DECISIONING_FACTS_TOPIC
from cjo_platform.facts import FACTS_TOPIC


def record_engagement(uow: UnitOfWork, engagement: Engagement, *,
                      forward_to_decisioning: bool = True) -> bool:
    """False when the message does not exist (in the engagement's workspace). With
    ``forward_to_decisioning``, opens and clicks also go to decisioning (its send times)."""
    message = engagement_store.engaged_message(uow.session, engagement)
    if message is None:
        return False
    now = uow.now()
    new = status_after(message.status, engagement.kind)
    if new is not message.status:
        engagement_store.change_status(uow.session, engagement, message.status, new, now)
    if suppresses(engagement.kind):
        repository.suppress(uow.session, [(engagement.workspace_id, message.channel.value,
                                           message.address,
                                           f"{engagement.kind.value}: {engagement.reason}")], now)
    event = engagement_store.event_payload(engagement, message, now)
    if event is not None:
        uow.publish(IDENTITY_EVENTS_TOPIC, engagement.workspace_id,
                    [(event, message.traceparent)])
    fact = engagement_store.fact_payload(engagement, message, now)
    if fact is not None:
        uow.publish(FACTS_TOPIC, engagement.workspace_id, [(fact, message.traceparent)])
        if forward_to_decisioning and engagement_store.learns_send_times(engagement):
            uow.publish(DECISIONING_FACTS_TOPIC, engagement.workspace_id,
                        [(fact, message.traceparent)])
    return True
