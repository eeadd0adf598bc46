"""Messages HELD behind an earlier one of their profile on their channel are released by the
earlier one's final outcome, in the transaction that records it, also when they were queued
while it was being sent (after its claim); erasure cancels them; a held message whose blocker
is gone without releasing it is released by the sender's safety net within ORPHAN_SWEEP."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from test_delivery_consent_tenants import Mailbox, Storage, sending, storage
from test_delivery_waiting_order import FailsFirst, Subscribed, queue, send_all, state

from cjo.common.v1 import common_pb2
from cjo_delivery.adapters import repository
from cjo_delivery.adapters.held import ORPHAN_SWEEP
from cjo_delivery.adapters.tables import messages as messages_table
from cjo_delivery.domain.messages import Channel, Claim, MessageStatus, NewMessage
from cjo_delivery.domain.sending import after_success
from cjo_delivery.service_layer import messages
from cjo_delivery.service_layer.claims import claim_due
from cjo_delivery.service_layer.outcomes import record_outcomes
from cjo_platform.secret_box import SecretBox
from support import eventually

__all__ = ["storage"]  # the fixture
WS = "ws-a"
LEASE = timedelta(minutes=5)


def new(key: str, profile: str = "ada", *, transactional: bool = False) -> NewMessage:
    content = common_pb2.RenderedMessage(
        channel=common_pb2.CHANNEL_EMAIL,
        email=common_pb2.RenderedEmail(subject="Hi", html="<p>Hi</p>", text="Hi"))
    return NewMessage(idempotency_key=key, profile_id=profile, address=f"{profile}@example.com",
                      channel=Channel.EMAIL, content=content.SerializeToString(),
                      journey_id="", enrollment_id="", transactional=transactional)


def waiting_for_a_lock(storage: Storage) -> bool:
    """PostgreSQL: whether a session of the test's database waits for a row lock."""
    with storage.transactions.db.engine.connect() as connection:
        return bool(connection.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")).scalar_one())


def claimed_on_postgresql(storage: Storage) -> tuple[datetime, str, Claim]:
    """Ada's first message, claimed by sender "A" (the test is skipped on SQLite: row locks)."""
    if storage.transactions.db.engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL")
    now = storage.clock.now()
    first = queue(storage, "k1")
    (claim,), _ = storage.transactions.run_sync(
        lambda uow: claim_due(uow, now, LEASE, 10, SecretBox([]), "A"))
    return now, first, claim


def queue_batch(storage: Storage, *items: NewMessage) -> list[tuple[str, MessageStatus]]:
    accepted = storage.transactions.run_sync(lambda uow: messages.queue_messages(
        uow, WS, list(items), "", lambda *announced: None))
    return [(a.message.message_id, a.message.status) for a in accepted]


async def test_a_batchs_messages_of_one_profile_and_channel_go_one_after_the_other(
        storage: Storage) -> None:
    """A batch with two of Ada's emails and Bob's: her second is held behind her first (which
    then fails for now), Bob's goes at once; hers go in order once the first is sent."""
    mailbox = FailsFirst()
    rounds = sending(storage, Subscribed(), mailbox)
    (first, s1), (second, s2), (bob, s3) = queue_batch(storage, new("k1"), new("k2"),
                                                       new("k3", "bob"))
    assert [s1, s2, s3] == [MessageStatus.QUEUED, MessageStatus.HELD, MessageStatus.QUEUED]
    await rounds.run()
    await send_all(storage, rounds, bob)
    assert mailbox.sent == [bob]
    assert state(storage, second) is MessageStatus.HELD
    storage.clock.advance(timedelta(hours=2))
    await send_all(storage, rounds, first, second)
    assert mailbox.sent == [bob, first, second]


async def test_a_repeated_key_does_not_hold_the_batchs_next_message(storage: Storage) -> None:
    """A batch repeating a key whose message was sent already: its new message of the same
    profile and channel has nothing before it to wait for, and is queued."""
    rounds = sending(storage, Subscribed(), Mailbox())
    first = queue(storage, "k1")
    await send_all(storage, rounds, first)
    (again, _), (second, status) = queue_batch(storage, new("k1"), new("k2"))
    assert again == first
    assert status is MessageStatus.QUEUED
    assert state(storage, second) is MessageStatus.QUEUED


async def test_transactional_messages_wait_only_behind_transactional_ones(
        storage: Storage) -> None:
    """Ada's receipt waits for its retry: her next receipt and her next newsletter wait behind
    it; behind a waiting newsletter, her receipt does not wait."""
    mailbox = FailsFirst()
    rounds = sending(storage, Subscribed(), mailbox)
    receipt = queue(storage, "k1", transactional=True)
    assert await rounds.run() == 1
    [(next_receipt, s1), (newsletter, s2)] = queue_batch(
        storage, new("k2", transactional=True), new("k3"))
    assert [s1, s2] == [MessageStatus.HELD, MessageStatus.HELD]
    storage.clock.advance(timedelta(hours=2))
    await send_all(storage, rounds, receipt, next_receipt, newsletter)
    assert mailbox.sent == [receipt, next_receipt, newsletter]


async def test_a_message_queued_during_the_earlier_ones_send_is_released_by_its_record(
        storage: Storage) -> None:
    """Ada's second message is queued after her first was claimed (the claim saw nothing held
    behind it): the first's record sees it and releases it, in the same transaction."""
    now = storage.clock.now()
    first = queue(storage, "k1")
    (claim,), _ = storage.transactions.run_sync(
        lambda uow: claim_due(uow, now, LEASE, 10, SecretBox([]), "A"))
    assert not claim.holds
    second = queue(storage, "k2")
    assert state(storage, second) is MessageStatus.HELD
    assert await record_outcomes(storage.transactions,
                                 [(claim, after_success(claim.attempts, "id-1"))], now) == []
    assert [state(storage, first), state(storage, second)] == [MessageStatus.SENT,
                                                               MessageStatus.QUEUED]


@pytest.mark.postgres
async def test_a_record_waits_for_a_queueing_that_holds_a_message_behind_its_message(
        storage: Storage) -> None:
    """PostgreSQL: Ada's second message is being queued (its transaction open, her first
    marked and locked) when her first's outcome is recorded: the record waits for it, then
    releases the second."""
    now, first, claim = claimed_on_postgresql(storage)
    queued, go = threading.Event(), threading.Event()
    ids: list[str] = []

    def queue_and_wait(uow: object) -> None:
        ids.extend(a.message.message_id for a in messages.queue_messages(
            uow, WS, [new("k2")], "", lambda *announced: None))  # type: ignore[arg-type]
        queued.set()
        assert go.wait(30)

    queueing = asyncio.get_running_loop().run_in_executor(
        None, lambda: storage.transactions.run_sync(queue_and_wait, attempts=1))
    assert await asyncio.to_thread(queued.wait, 30)
    recording = asyncio.create_task(record_outcomes(
        storage.transactions, [(claim, after_success(claim.attempts, "id-1"))], now))

    assert await eventually(lambda: waiting_for_a_lock(storage), timeout=10)
    go.set()
    await asyncio.wait_for(queueing, 30)
    assert await asyncio.wait_for(recording, 30) == []
    assert [state(storage, first), state(storage, ids[0])] == [MessageStatus.SENT,
                                                               MessageStatus.QUEUED]


async def test_erasing_a_profile_cancels_its_held_messages(storage: Storage) -> None:
    rounds = sending(storage, Subscribed(), FailsFirst())
    first = queue(storage, "k1")
    assert await rounds.run() == 1
    second = queue(storage, "k2")
    assert storage.transactions.run_sync(
        lambda uow: messages.erase_profiles(uow, WS, ["ada"])) == [(2, 0)]
    assert [state(storage, first), state(storage, second)] == [MessageStatus.SUPPRESSED] * 2


async def test_a_held_message_whose_blocker_is_gone_is_released_by_the_safety_net(
        storage: Storage) -> None:
    """Ada's first message ends without releasing her second (as when its record was
    refused): the sender releases it at its next sweep, ORPHAN_SWEEP after the last."""
    mailbox = Mailbox()
    rounds = sending(storage, Subscribed(), mailbox)
    await rounds.run()  # the first sweep
    first = queue(storage, "k1")
    second = queue(storage, "k2")
    assert state(storage, second) is MessageStatus.HELD
    storage.transactions.run_sync(lambda uow: uow.session.execute(
        update(messages_table).where(messages_table.c.message_id == first)
        .values(status=MessageStatus.FAILED.value, next_attempt_time=None)))
    await rounds.run()
    assert state(storage, second) is MessageStatus.HELD
    storage.clock.advance(ORPHAN_SWEEP)
    await send_all(storage, rounds, second)
    assert mailbox.sent == [second]


@pytest.mark.postgres
async def test_a_message_queued_while_the_earlier_ones_record_commits_is_not_held(
        storage: Storage) -> None:
    """PostgreSQL: Ada's second message is queued while her first's outcome (sent) is being
    recorded (its transaction open): the queueing waits for the record, sees the first final
    and queues the second at once (it would otherwise wait for the safety net)."""
    now, first, claim = claimed_on_postgresql(storage)
    recorded, go = threading.Event(), threading.Event()

    def record_and_wait(uow: Any) -> None:
        repository.record_all(uow.session, [(claim, after_success(claim.attempts, "id-1"))], now)
        recorded.set()
        assert go.wait(30)

    recording = asyncio.get_running_loop().run_in_executor(
        None, lambda: storage.transactions.run_sync(record_and_wait, attempts=1))
    assert await asyncio.to_thread(recorded.wait, 30)
    queueing = asyncio.create_task(asyncio.to_thread(queue, storage, "k2"))
    assert await eventually(lambda: waiting_for_a_lock(storage), timeout=10)
    go.set()
    await asyncio.wait_for(recording, 30)
    second = await asyncio.wait_for(queueing, 30)
    assert [state(storage, first), state(storage, second)] == [MessageStatus.SENT,
                                                               MessageStatus.QUEUED]
