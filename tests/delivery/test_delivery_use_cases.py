"""The delivery use-cases called directly, in units of work on a temporary SQLite database: no
gRPC; send rounds driven one at a time on a manual clock (and the sender loop, once)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters.routes import Routes
from cjo_delivery.adapters.tables import metadata
from cjo_delivery.bootstrap import MIGRATIONS
from cjo_delivery.domain.engagement import Engagement, EngagementKind
from cjo_delivery.domain.messages import Channel, Message, MessageStatus, NewMessage
from cjo_delivery.domain.policies import (
    ConsentDecision,
    ConsentDirectory,
    ConsentQuery,
    DeliveryPolicy,
    FrequencyCap,
)
from cjo_delivery.domain.providers import MAX_PROVIDERS_PER_CHANNEL, ProviderKind
from cjo_delivery.domain.sending import OutgoingMessage, ProviderError
from cjo_delivery.service_layer import messages, policies, providers
from cjo_delivery.service_layer import send_round as send_round_module
from cjo_delivery.service_layer.claims import claim_due
from cjo_delivery.service_layer.engagement import record_engagement
from cjo_delivery.service_layer.send_round import SenderSettings, SendRound
from cjo_delivery.workers.sender import Sender
from cjo_platform.clock import ManualClock
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import Aborted, FailedPrecondition, NotFound
from cjo_platform.secret_box import SecretBox
from cjo_platform.service import open_storage
from support import Backend, eventually, new_backend, settings_for

WS = "ws-a"
BOX = SecretBox([])


@dataclass
class Storage:
    transactions: Transactions
    clock: ManualClock


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    yield from _storage(new_backend("sqlite", tmp_path))


@pytest.fixture
def any_storage(backend: Backend) -> Iterator[Storage]:
    """:func:`storage` on each database."""
    yield from _storage(backend)


def _storage(backend: Backend) -> Iterator[Storage]:
    clock = ManualClock()
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    opened = open_storage(settings_for("delivery", backend), metadata, MIGRATIONS, clock)
    opened.migrate()
    yield Storage(opened.transactions, clock)
    opened.db.dispose()


def email(key: str, profile_id: str = "p1") -> NewMessage:
    content = common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL, content_key="welcome",
        email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"))
    return NewMessage(idempotency_key=key, profile_id=profile_id, address="ada@example.com",
                      channel=Channel.EMAIL, content=content.SerializeToString(),
                      journey_id="j1", enrollment_id="e1")


@dataclass
class Mailbox:
    """A provider in memory: takes messages, or fails the next ``failures`` calls."""

    failures: list[ProviderError] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)

    async def send(self, message: OutgoingMessage) -> str:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message.message_id)
        return f"<{message.message_id}@mailbox>"

    async def close(self) -> None:
        pass


def send_round(storage: Storage, mailbox: Mailbox,
               consent: ConsentDirectory | None = None) -> SendRound:
    settings = SenderSettings()
    routes = Routes(mailbox, breaker_failures=settings.breaker_failures,
                    breaker_cool_down=settings.breaker_cool_down)
    return SendRound(storage.transactions, routes, storage.clock, settings, consent=consent)


def status_of(storage: Storage, message_id: str) -> MessageStatus:
    return storage.transactions.run_sync(
        lambda uow: messages.get_message(uow, WS, message_id, message_id)).status


def test_queueing_answers_a_repeated_key_with_the_first_message_and_wakes_once(
        storage: Storage) -> None:
    wakes: list[str] = []

    def announce(uow: UnitOfWork, workspace_id: str, queued: Sequence[Message]) -> None:
        uow.after_commit(lambda: wakes.append("woken"))

    first = storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, WS, [email("k1"), email("k1")], "", announce))
    again = storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, WS, [email("k1")], "", announce))
    assert [a.duplicate for a in first] == [False, True]
    assert again[0].duplicate and again[0].message.message_id == first[0].message.message_id
    assert wakes == ["woken"]  # nothing new the second time: the sender sleeps on


async def test_a_send_round_sends_retries_with_backoff_and_records_each_outcome(
        storage: Storage) -> None:
    mailbox = Mailbox(failures=[ProviderError("451 later", transient=True)])
    (queued,) = await storage.transactions.run(lambda uow: messages.queue_messages(
        uow, WS, [email("k1")], "", lambda *announced: None))
    message_id = queued.message.message_id
    rounds = send_round(storage, mailbox)

    assert await rounds.run() == 1
    assert status_of(storage, message_id) is MessageStatus.QUEUED  # failed for a while
    assert await rounds.run() == 0  # not due before the backoff ran out
    storage.clock.advance(timedelta(hours=1))
    assert await rounds.run() == 1
    message = storage.transactions.run_sync(
        lambda uow: messages.get_message(uow, WS, message_id, message_id))
    assert (message.status, message.attempts) == (MessageStatus.SENT, 2)
    assert mailbox.sent == [message_id]


async def test_a_frequency_cap_defers_the_message_over_it(storage: Storage) -> None:
    await storage.transactions.run(lambda uow: policies.update_policy(uow, WS, DeliveryPolicy(
        {Channel.EMAIL: FrequencyCap(Channel.EMAIL, 1, timedelta(hours=1))})))
    accepted = await storage.transactions.run(lambda uow: messages.queue_messages(
        uow, WS, [email("k1"), email("k2")], "", lambda *announced: None))
    mailbox = Mailbox()
    rounds = send_round(storage, mailbox)
    await rounds.run()
    # The second, held behind the first, is released by its record and claimed next.
    assert await rounds.run() == 1
    statuses = [status_of(storage, a.message.message_id) for a in accepted]
    assert statuses == [MessageStatus.SENT, MessageStatus.DEFERRED]
    assert len(mailbox.sent) == 1


def test_providers_are_created_updated_with_an_etag_and_deleted(storage: Storage) -> None:
    run = storage.transactions.run_sync
    draft = providers.ProviderDraft(channel=Channel.SMS, kind=ProviderKind.HTTP_JSON,
                                    display_name="First",
                                    config={"url": "https://sms.example/send"},
                                    secrets={"api_key": "k1"})
    created = run(lambda uow: providers.create_provider(uow, WS, draft, box=BOX))
    changes = providers.ProviderDraft(channel=None, kind=None, display_name="Renamed")
    updated = run(lambda uow: providers.update_provider(
        uow, WS, created.provider_id, "n", changes, frozenset({"display_name"}), created.etag,
        box=BOX))
    assert updated.display_name == "Renamed" and updated.secrets == {"api_key": "k1"}
    with pytest.raises(Aborted):  # the etag of the first version no longer matches
        run(lambda uow: providers.update_provider(
            uow, WS, created.provider_id, "n", changes, frozenset({"display_name"}),
            created.etag, box=BOX))
    run(lambda uow: providers.delete_provider(uow, WS, created.provider_id, "n"))
    with pytest.raises(NotFound):
        run(lambda uow: providers.get_provider(uow, WS, created.provider_id, "n", box=BOX))


def test_a_channel_takes_a_bounded_number_of_providers(storage: Storage) -> None:
    draft = providers.ProviderDraft(channel=Channel.SMS, kind=ProviderKind.HTTP_JSON,
                                    config={"url": "https://sms.example/send"},
                                    secrets={"api_key": "k"})
    for _ in range(MAX_PROVIDERS_PER_CHANNEL):
        storage.transactions.run_sync(
            lambda uow: providers.create_provider(uow, WS, draft, box=BOX))
    with pytest.raises(FailedPrecondition):
        storage.transactions.run_sync(
            lambda uow: providers.create_provider(uow, WS, draft, box=BOX))


def test_an_unsubscribe_suppresses_the_address_and_tells_identity_and_analytics(
        storage: Storage) -> None:
    (queued,) = storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, WS, [email("k1")], "", lambda *announced: None))
    unsubscribe = Engagement(EngagementKind.UNSUBSCRIBED, WS, queued.message.message_id)
    assert storage.transactions.run_sync(lambda uow: record_engagement(uow, unsubscribe))
    unknown = Engagement(EngagementKind.OPENED, WS, "nope")
    assert not storage.transactions.run_sync(lambda uow: record_engagement(uow, unknown))
    outbox = storage.transactions.outbox
    assert outbox is not None
    topics = storage.transactions.run_sync(lambda uow: sorted(
        row.topic for row in uow.session.execute(outbox.table.select()).all()))
    assert topics == ["analytics.facts", "identity.events"]


def test_erasing_a_profile_cancels_its_queued_messages(storage: Storage) -> None:
    (queued,) = storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, WS, [email("k1")], "", lambda *announced: None))
    counts = storage.transactions.run_sync(lambda uow: messages.erase_profiles(uow, WS, ["p1"]))
    assert counts == [(1, 0)]
    assert status_of(storage, queued.message.message_id) is MessageStatus.SUPPRESSED


@dataclass
class Consent:
    """A ConsentDirectory in memory: the profiles in ``denied`` are unsubscribed; each call's
    profiles are logged (in ``calls`` and, as "consent", in ``order``), ``asked`` set at the
    first."""

    denied: set[str]
    calls: list[list[str]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    asked: threading.Event = field(default_factory=threading.Event)

    async def check(self, workspace_id: str,
                    queries: list[ConsentQuery]) -> list[ConsentDecision]:
        self.calls.append(sorted(q.profile_id for q in queries))
        self.order.append("consent")
        self.asked.set()
        return [ConsentDecision(q.profile_id not in self.denied, "unsubscribed")
                for q in queries]


def claims_once_consent_was_asked(monkeypatch: pytest.MonkeyPatch, consent: Consent
                                  ) -> threading.Event:
    """Once the returned event is set, a round's claim waits (in its database thread) until
    identity was asked, and logs "claim" in ``consent.order``: a round that asks only after its
    claim waits 5 s, then claims first."""
    armed = threading.Event()

    def claim(*args: Any, **options: Any) -> Any:
        if armed.is_set():
            consent.asked.wait(5)
            consent.order.append("claim")
        return claim_due(*args, **options)

    monkeypatch.setattr(send_round_module, "claim_due", claim)
    return armed


async def test_a_round_asks_for_the_consent_of_the_messages_it_expects_while_it_claims(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages just queued (``expected``) are asked about while the claim runs, not after
    it; claimed messages the round did not expect are asked about once the claim is in."""
    accepted = await storage.transactions.run(lambda uow: messages.queue_messages(
        uow, WS, [email("k1", "p1"), email("k2", "p2"), email("k3", "p3")], "",
        lambda *announced: None))
    consent = Consent(denied={"p2"})
    claims_once_consent_was_asked(monkeypatch, consent).set()
    rounds = send_round(storage, Mailbox(), consent)
    expected = {WS: {ConsentQuery(p, Channel.EMAIL, "") for p in ("p1", "p2")}}
    assert await rounds.run(expected=expected) == 3
    assert consent.order == ["consent", "claim", "consent"]
    assert consent.calls == [["p1", "p2"], ["p3"]]
    assert [status_of(storage, a.message.message_id) for a in accepted] == [
        MessageStatus.SENT, MessageStatus.SUPPRESSED, MessageStatus.SENT]


async def test_the_sender_asks_for_the_consent_of_what_its_process_queued_while_it_claims(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """The intake tells its process's sender what it queued, with the wake-up: the round it
    wakes asks identity about those messages while it claims them, in one call."""
    consent = Consent(denied=set())
    armed = claims_once_consent_was_asked(monkeypatch, consent)
    mailbox = Mailbox()
    rounds = send_round(storage, mailbox, consent)
    polled = rounds.run

    async def run(*args: Any, **kwargs: Any) -> int:
        claimed = await polled(*args, **kwargs)
        armed.set()  # the first round (a poll, nothing due) is over
        return claimed

    rounds.run = run  # type: ignore[method-assign]
    sender = Sender(rounds)
    running = asyncio.create_task(sender.run())
    try:
        await eventually(armed.is_set)

        def announce(uow: UnitOfWork, workspace_id: str, queued: Sequence[Message]) -> None:
            uow.after_commit(partial(sender.expect, workspace_id, queued))
            uow.after_commit(sender.wake)

        (queued,) = await storage.transactions.run(lambda uow: messages.queue_messages(
            uow, WS, [email("k1", "p1")], "", announce))
        await eventually(lambda: mailbox.sent == [queued.message.message_id], timeout=10)
        assert consent.order == ["consent", "claim"] and consent.calls == [["p1"]]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


@dataclass
class HeldMailbox(Mailbox):
    """A Mailbox whose calls each wait for ``release``."""

    release: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))

    async def send(self, message: OutgoingMessage) -> str:
        await self.release.acquire()
        return await super().send(message)


@contextlib.contextmanager
def record_statements(storage: Storage) -> Iterator[list[str]]:
    """The record UPDATEs of messages run meanwhile (one per record transaction and shape)."""
    records: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.replace(" = ", "=").startswith("UPDATE messages SET status=?, attempts=?"):
            records.append(statement)

    engine = storage.transactions.db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield records
    finally:
        event.remove(engine, "before_cursor_execute", count)


def lingering_rounds(storage: Storage, mailbox: Mailbox, batch_size: int = 100) -> SendRound:
    settings = SenderSettings(batch_size=batch_size,
                              record_linger=timedelta(seconds=60))  # never runs out here
    routes = Routes(mailbox, breaker_failures=settings.breaker_failures,
                    breaker_cool_down=settings.breaker_cool_down)
    return SendRound(storage.transactions, routes, storage.clock, settings)


async def test_a_rounds_outcomes_arriving_apart_are_recorded_together(
        storage: Storage) -> None:
    """Outcomes that arrive one after another within the linger are recorded in one
    transaction, not one each."""
    accepted = await storage.transactions.run(lambda uow: messages.queue_messages(
        uow, WS, [email(f"k{i}", f"p{i}") for i in range(3)], "", lambda *announced: None))
    mailbox = HeldMailbox()
    rounds = lingering_rounds(storage, mailbox)
    with record_statements(storage) as records:
        running = asyncio.create_task(rounds.run())
        for sent in range(1, 4):  # the provider answers one message at a time
            mailbox.release.release()
            await eventually(lambda n=sent: len(mailbox.sent) == n)  # type: ignore[misc]
        assert await running == 3
    assert len(records) == 1
    assert {status_of(storage, a.message.message_id) for a in accepted} == {MessageStatus.SENT}


async def two_rounds_under_way(storage: Storage, mailbox: HeldMailbox,
                               ) -> tuple[list[Any], list[asyncio.Task[int]]]:
    """Two messages queued, each claimed by a round of its own, both waiting for
    ``mailbox``."""
    accepted = await storage.transactions.run(lambda uow: messages.queue_messages(
        uow, WS, [email(f"k{i}", f"p{i}") for i in range(2)], "", lambda *announced: None))
    rounds = lingering_rounds(storage, mailbox, batch_size=1)
    under_way: list[asyncio.Task[int]] = []
    for queued in accepted:
        under_way.append(asyncio.create_task(rounds.run()))
        await eventually(lambda q=queued: status_of(  # type: ignore[misc]
            storage, q.message.message_id) is MessageStatus.SENDING)
    return accepted, under_way


async def test_outcomes_of_rounds_under_way_together_are_recorded_in_one_transaction(
        any_storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds overlap and share the provider slots: their outcomes that arrive within the
    linger are recorded in one transaction for the process, not one per round."""
    record = send_round_module.record_outcomes
    records: list[int] = []

    async def counted(transactions: Any, changes: Sequence[Any], *args: Any,
                      **kwargs: Any) -> Any:
        records.append(len(changes))
        return await record(transactions, changes, *args, **kwargs)

    monkeypatch.setattr(send_round_module, "record_outcomes", counted)
    mailbox = HeldMailbox()
    accepted, under_way = await two_rounds_under_way(any_storage, mailbox)
    mailbox.release.release()  # the first round's message is sent; the other's waits
    await eventually(lambda: len(mailbox.sent) == 1)
    mailbox.release.release()
    assert await asyncio.gather(*under_way) == [1, 1]
    assert records == [2]
    assert {status_of(any_storage, a.message.message_id)
            for a in accepted} == {MessageStatus.SENT}


async def test_rounds_record_their_outcomes_alone_when_their_shared_record_failed(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record transaction shared by rounds that fails is tried again by each round for its
    own outcomes: every message still ends SENT, once."""
    record = send_round_module.record_outcomes
    calls: list[int] = []

    async def failing_once(transactions: Any, changes: Sequence[Any], *args: Any,
                           **kwargs: Any) -> Any:
        calls.append(len(changes))
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return await record(transactions, changes, *args, **kwargs)

    monkeypatch.setattr(send_round_module, "record_outcomes", failing_once)
    mailbox = HeldMailbox()
    accepted, under_way = await two_rounds_under_way(storage, mailbox)
    mailbox.release.release()
    mailbox.release.release()
    assert await asyncio.gather(*under_way) == [1, 1]
    assert calls == [2, 1, 1]
    assert {status_of(storage, a.message.message_id) for a in accepted} == {MessageStatus.SENT}
    assert sorted(mailbox.sent) == sorted(a.message.message_id for a in accepted)


async def test_a_round_recording_its_last_outcomes_does_not_hold_up_the_next_claim(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one round at a time, the next claim comes once every message of the round was
    attempted, not once their outcomes are recorded."""
    recording = asyncio.Event()
    go_on = asyncio.Event()
    record = send_round_module.record_outcomes

    async def held(*args: Any, **kwargs: Any) -> Any:
        if not recording.is_set():  # the first round's record waits
            recording.set()
            await go_on.wait()
        return await record(*args, **kwargs)

    monkeypatch.setattr(send_round_module, "record_outcomes", held)
    mailbox = Mailbox()
    settings = SenderSettings(rounds=1)
    routes = Routes(mailbox, breaker_failures=settings.breaker_failures,
                    breaker_cool_down=settings.breaker_cool_down)
    sender = Sender(SendRound(storage.transactions, routes, storage.clock, settings))
    running = asyncio.create_task(sender.run())
    try:
        await eventually(lambda: sender._loop is not None)
        for key in ("k1", "k2"):
            (queued,) = await storage.transactions.run(
                lambda uow, key=key: messages.queue_messages(  # type: ignore[misc]
                    uow, WS, [email(key, key)], "",
                    lambda uow, *queued: uow.after_commit(sender.wake)))
            await eventually(lambda q=queued: q.message.message_id in mailbox.sent)  # type: ignore[misc]
        assert recording.is_set() and not go_on.is_set()  # k2 sent while k1 is recorded
        go_on.set()
        await eventually(lambda: status_of(storage, queued.message.message_id)
                         is MessageStatus.SENT)
    finally:
        go_on.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
