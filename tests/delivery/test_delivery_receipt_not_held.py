"""A message waiting for its next attempt (here: the 30 s after identity could not answer for
consent) does not hold back its profile's later messages: a receipt queued after it (a
transactional message, no consent needed) goes at once, not up to an hour later (review r2;
holding a profile behind its waiting messages also made every claim walk the whole blocked
backlog during a provider outage, so it was taken out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from test_delivery_consent_tenants import Mailbox, Storage, sending, storage

from cjo.common.v1 import common_pb2
from cjo_delivery.domain.messages import Channel, MessageStatus, NewMessage
from cjo_delivery.domain.policies import ConsentDecision, ConsentQuery, ConsentUnavailable
from cjo_delivery.service_layer import messages

__all__ = ["storage"]  # the fixture


def queue(storage: Storage, key: str, *, transactional: bool = False) -> str:
    content = common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL,
        email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"))
    (accepted,) = storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, "ws-a", [NewMessage(idempotency_key=key, profile_id="ada",
                                 address="ada@example.com", channel=Channel.EMAIL,
                                 content=content.SerializeToString(), journey_id="",
                                 enrollment_id="", transactional=transactional)],
        "", lambda *announced: None))
    return accepted.message.message_id


def state(storage: Storage, message_id: str) -> MessageStatus:
    found = storage.transactions.run_sync(
        lambda uow: messages.get_message(uow, "ws-a", message_id, message_id))
    return found.status


@dataclass
class UnavailableFirst:
    """Consent that identity cannot answer the first time, and answers subscribed after."""

    calls: list[list[ConsentQuery]] = field(default_factory=list)

    async def check(self, workspace_id: str,
                    queries: list[ConsentQuery]) -> list[ConsentDecision]:
        self.calls.append(queries)
        if len(self.calls) == 1:
            raise ConsentUnavailable("identity did not answer the consent check: UNAVAILABLE")
        return [ConsentDecision(True, "subscribed") for _ in queries]


async def test_a_receipt_is_not_held_behind_a_message_waiting_for_consent(
        storage: Storage) -> None:
    """Identity cannot answer for Ada's first message: it waits 30 s. A receipt queued after
    it is sent by the next round; the first goes once its wait is over."""
    mailbox = Mailbox()
    rounds = sending(storage, UnavailableFirst(), mailbox)
    first = queue(storage, "k1")
    assert await rounds.run() == 1
    assert state(storage, first) is MessageStatus.QUEUED
    receipt = queue(storage, "k2", transactional=True)
    assert await rounds.run() == 1
    assert mailbox.sent == [receipt]
    storage.clock.advance(timedelta(seconds=30))
    assert await rounds.run() == 1
    assert mailbox.sent == [receipt, first]
