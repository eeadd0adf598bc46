"""A profile's message waiting for its next attempt (a retry's backoff after a transient
provider error, the wait after identity could not answer for consent) keeps the profile's later
messages on the same channel behind it: they reach the provider after it, not before. The scope
is (workspace, profile, channel): another profile's messages, and a transactional message
behind a marketing one, do not wait (a password reset never waits for a newsletter's retry)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from test_delivery_consent_tenants import Mailbox, Storage, sending, status, storage

from cjo.common.v1 import common_pb2
from cjo_delivery.domain.messages import Channel, MessageStatus, NewMessage
from cjo_delivery.domain.policies import ConsentDecision, ConsentQuery, ConsentUnavailable
from cjo_delivery.domain.sending import OutgoingMessage, ProviderError
from cjo_delivery.service_layer import messages
from cjo_delivery.service_layer.send_round import SendRound
from support import eventually

__all__ = ["storage"]  # the fixture
WS = "ws-a"
# Past the longest retry backoff (CJO_DELIVERY_RETRY_MAX_SECONDS) and the consent wait.
LATER = timedelta(hours=2)


def queue(storage: Storage, key: str, *, profile: str = "ada",
          transactional: bool = False) -> str:
    content = common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL,
        email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"))
    (accepted,) = storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, WS, [NewMessage(idempotency_key=key, profile_id=profile,
                             address=f"{profile}@example.com", channel=Channel.EMAIL,
                             content=content.SerializeToString(), journey_id="",
                             enrollment_id="", transactional=transactional)],
        "", lambda *announced: None))
    return accepted.message.message_id


def state(storage: Storage, message_id: str) -> MessageStatus:
    return status(storage, WS, message_id)[0]


@dataclass
class Subscribed:
    """Identity answering every consent question: subscribed."""

    calls: int = 0

    async def check(self, workspace_id: str,
                    queries: list[ConsentQuery]) -> list[ConsentDecision]:
        self.calls += 1
        return [ConsentDecision(True, "subscribed") for _ in queries]


@dataclass
class UnavailableOnce(Subscribed):
    """Identity that cannot answer its first consent question (the message waits CONSENT_WAIT),
    then answers every one."""

    async def check(self, workspace_id: str,
                    queries: list[ConsentQuery]) -> list[ConsentDecision]:
        if self.calls == 0:
            self.calls += 1
            raise ConsentUnavailable("identity did not answer the consent check: UNAVAILABLE")
        return await super().check(workspace_id, queries)


@dataclass
class FailsFirst(Mailbox):
    """A provider whose first call fails with a transient error (the message goes back to
    wait for its retry), once ``go`` is set; every later call is taken."""

    go: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    def __post_init__(self) -> None:
        self.go.set()

    async def send(self, message: OutgoingMessage) -> str:
        self.calls += 1
        if self.calls == 1:
            await self.go.wait()
            raise ProviderError("421 try again later", transient=True)
        return await super().send(message)


async def send_all(storage: Storage, rounds: SendRound, *ids: str) -> None:
    """Run rounds until none of ``ids`` is left to send (each released one is claimed by a
    round after the one that recorded its blocker's outcome)."""
    for _ in range(2 * len(ids) + 2):
        if all(state(storage, i) is MessageStatus.SENT for i in ids):
            return
        await rounds.run()
    raise AssertionError([state(storage, i) for i in ids])


async def goes_after(storage: Storage, rounds: SendRound, mailbox: Mailbox, first: str,
                    second: str) -> None:
    """While ``first`` waits, a round sends nothing; once it is due, ``second`` goes after it."""
    await rounds.run()
    assert mailbox.sent == []
    storage.clock.advance(LATER)
    await send_all(storage, rounds, first, second)
    assert mailbox.sent == [first, second]


async def test_a_later_message_waits_behind_one_waiting_for_its_retry(
        storage: Storage) -> None:
    """Ada's first message meets a transient provider error and waits for its retry: her second,
    queued meanwhile, is not sent before it, and goes right after it."""
    mailbox = FailsFirst()
    rounds = sending(storage, Subscribed(), mailbox)
    first = queue(storage, "k1")
    assert await rounds.run() == 1
    assert state(storage, first) is MessageStatus.QUEUED  # waiting for its retry
    await goes_after(storage, rounds, mailbox, first, queue(storage, "k2"))


async def test_a_later_message_queued_while_the_first_is_sent_waits_for_its_retry(
        storage: Storage) -> None:
    """Ada's second message is queued while her first is at the provider, which then fails it
    for now: the second waits for the first's retry too."""
    mailbox = FailsFirst()
    mailbox.go.clear()
    rounds = sending(storage, Subscribed(), mailbox)
    first = queue(storage, "k1")
    at_provider = asyncio.create_task(rounds.run())
    assert await eventually(lambda: mailbox.calls == 1, timeout=10)
    second = queue(storage, "k2")
    mailbox.go.set()
    assert await asyncio.wait_for(at_provider, 10) == 1
    assert state(storage, first) is MessageStatus.QUEUED
    await goes_after(storage, rounds, mailbox, first, second)


async def test_a_later_message_waits_behind_one_waiting_for_a_consent_answer(
        storage: Storage) -> None:
    """Identity cannot answer for Ada's first message (it waits 30 s to ask again): her second,
    whose consent identity answers, still goes after it."""
    mailbox = Mailbox()
    rounds = sending(storage, UnavailableOnce(), mailbox)
    first = queue(storage, "k1")
    assert await rounds.run() == 1
    assert state(storage, first) is MessageStatus.QUEUED
    await goes_after(storage, rounds, mailbox, first, queue(storage, "k2"))


async def test_another_profile_and_a_transactional_message_do_not_wait(
        storage: Storage) -> None:
    """While Ada's marketing message waits for its retry, Bob's message and Ada's password
    reset (transactional) go out at once; her later marketing message waits."""
    mailbox = FailsFirst()
    rounds = sending(storage, Subscribed(), mailbox)
    first = queue(storage, "k1")
    assert await rounds.run() == 1
    bob = queue(storage, "k2", profile="bob")
    reset = queue(storage, "k3", transactional=True)
    later = queue(storage, "k4")
    await send_all(storage, rounds, bob, reset)
    assert mailbox.sent == [bob, reset]
    assert state(storage, later) is not MessageStatus.SENT
    storage.clock.advance(LATER)
    await send_all(storage, rounds, first, later)
    assert mailbox.sent == [bob, reset, first, later]
