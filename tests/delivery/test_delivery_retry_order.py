"""A message put back to wait for its next attempt (a send retry's backoff, the wait after
identity could not answer for consent) keeps its place first in its profile's queue: the
profile's later messages are neither claimed (by any process) nor sent (by the process that
claimed them with it) until it went; one that ended for good, one deferred by a policy, or one
queued longer ago than the order hold holds nothing up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from delivery_support import delivery_app
from test_delivery_consent_tenants import Mailbox, Storage, sending, storage
from test_delivery_profile_order import LEASE, new

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters import repository
from cjo_delivery.domain.messages import Channel, MessageStatus, NewMessage
from cjo_delivery.domain.policies import ConsentDecision, ConsentQuery, ConsentUnavailable
from cjo_delivery.domain.sending import OutgoingMessage, ProviderError, Transition
from cjo_delivery.service_layer import messages
from cjo_platform.clock import ManualClock
from support import Backend, free_port

__all__ = ["storage"]  # the fixture

RETRY = timedelta(seconds=30)


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
class RefusesFirst(Mailbox):
    """A provider whose first call fails with a transient error (the message is retried)."""

    calls: int = 0

    async def send(self, message: OutgoingMessage) -> str:
        self.calls += 1
        if self.calls == 1:
            raise ProviderError("421 try again later", transient=True)
        return await super().send(message)


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


async def test_a_message_retried_holds_back_the_profiles_next_one_of_its_round(
        storage: Storage) -> None:
    """Ada's first and second message are claimed together; the provider refuses the first
    for now: the second goes back unsent, and no claim takes it while the first waits for its
    retry. Both go once the retry is due, in order."""
    mailbox = RefusesFirst()
    rounds = sending(storage, UnavailableFirst([[]]), mailbox)  # consent: answers at once
    first, second = queue(storage, "k1"), queue(storage, "k2")
    assert await rounds.run() == 2
    assert mailbox.sent == []
    assert [state(storage, first), state(storage, second)] == [MessageStatus.QUEUED] * 2
    assert await rounds.run() == 0  # the second waits for the first's retry
    assert mailbox.sent == []
    storage.clock.advance(RETRY)
    assert await rounds.run() == 2
    assert mailbox.sent == [first, second]


async def test_a_message_waiting_for_consent_holds_back_a_receipt_queued_after_it(
        storage: Storage) -> None:
    """Identity cannot answer for Ada's first message: it waits 30 s. A transactional
    message queued after it (no consent needed) waits with it, and goes second."""
    mailbox = Mailbox()
    identity = UnavailableFirst()
    rounds = sending(storage, identity, mailbox)
    first = queue(storage, "k1")
    assert await rounds.run() == 1
    assert state(storage, first) is MessageStatus.QUEUED
    receipt = queue(storage, "k2", transactional=True)
    assert await rounds.run() == 0
    assert mailbox.sent == []
    storage.clock.advance(RETRY)
    assert await rounds.run() == 2
    assert mailbox.sent == [first, receipt]


async def test_a_waiting_message_holds_back_its_profile_in_every_processes_claim(
        backend: Backend) -> None:
    """The claim itself: Ada's first message, claimed by process A and put back to wait for
    its retry, keeps Ada's later one from A's and B's claims (Bob's goes); once due, both
    are claimed in order. What waits no longer (ended, deferred, queued before the order
    hold) holds nothing up."""
    clock = ManualClock()
    app = delivery_app(backend, free_port(), clock)
    await app.db.run(app.migrate)
    ids = iter(f"m{i}" for i in range(100))

    def queue_one(key: str, profile: str) -> str:
        with app.db.transaction() as session:
            (accepted,) = repository.queue_messages(session, "ws-a", [new(key, profile)],
                                                    clock.now(), "", lambda: next(ids))
        return accepted.message.message_id

    def claim(holder: str, **options: object) -> list[str]:
        with app.db.transaction() as session:
            return [c.message_id for c in repository.claim_due(
                session, clock.now(), clock.now() + LEASE, 10, holder=holder,
                **options)]  # type: ignore[arg-type]

    def put_back(message_id: str, status: MessageStatus, until: timedelta | None) -> None:
        with app.db.transaction() as session:
            [claimed] = [c for c in repository.claim_due(
                session, clock.now(), clock.now() + LEASE, 10, holder="A")
                if c.message_id == message_id]
            assert repository.record(session, claimed, Transition(
                status, claimed.attempts, None if until is None else clock.now() + until,
                "421 try again later", ""), clock.now())

    def scenario() -> None:
        first = queue_one("a1", "ada")
        put_back(first, MessageStatus.QUEUED, RETRY)
        later, bob = queue_one("a2", "ada"), queue_one("b1", "bob")
        assert claim("B") == [bob]
        assert claim("A") == []
        clock.advance(RETRY)
        assert claim("B") == [first, later]
        for status, until in ((MessageStatus.FAILED, None), (MessageStatus.SUPPRESSED, None),
                              (MessageStatus.DEFERRED, timedelta(hours=8))):
            ended = queue_one(f"e-{status}", f"eve-{status}")
            put_back(ended, status, until)
            after = queue_one(f"f-{status}", f"eve-{status}")
            assert claim("B") == [after], status
        old = queue_one("c1", "cleo")
        put_back(old, MessageStatus.QUEUED, RETRY)
        newer = queue_one("c2", "cleo")
        assert claim("B") == []
        assert claim("B", order_since=clock.now()) == [newer]  # it waits too long: given up

    try:
        await app.db.run(scenario)
    finally:
        app.db.dispose()
