"""PostgreSQL, READ COMMITTED: queueings and records of one profile's messages on one channel
take the scope's lock first (adapters/held.py, ``lock_scopes``). Two queueings at once: the
second waits and holds its message behind the first's (each saw none of the other's, and both
went QUEUED: the later overtook, as two replicas of orchestration sending a profile's steps at
once did in the two-replica end-to-end test). A queueing beside a record that releases: neither
waits for the other while holding what the other needs (no deadlock, each in one attempt)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from test_delivery_consent_tenants import Storage, storage
from test_delivery_held_release import LEASE, WS, new, waiting_for_a_lock
from test_delivery_waiting_order import queue, state

from cjo_delivery.adapters import held, repository
from cjo_delivery.domain.messages import MessageStatus
from cjo_delivery.domain.sending import after_success
from cjo_delivery.service_layer import messages
from cjo_delivery.service_layer.claims import claim_due
from cjo_platform.secret_box import SecretBox
from support import eventually

__all__ = ["storage"]  # the fixture


def on_postgresql(storage: Storage) -> None:
    if storage.transactions.db.engine.dialect.name != "postgresql":
        pytest.skip("overlapping writers: PostgreSQL (SQLite has one writer)")


def queue_all(uow: Any, *keys: tuple[str, str]) -> list[str]:
    return [a.message.message_id for a in messages.queue_messages(
        uow, WS, [new(key, profile) for key, profile in keys], "", lambda *announced: None)]


async def held_open(storage: Storage, work: Callable[[Any], None]
                    ) -> tuple[asyncio.Future[None], threading.Event]:
    """``work`` done by a transaction left open until the event is set: the transaction's end,
    and the event."""
    done, go = threading.Event(), threading.Event()

    def work_and_wait(uow: Any) -> None:
        work(uow)
        done.set()
        assert go.wait(30)

    transaction = asyncio.get_running_loop().run_in_executor(
        None, lambda: storage.transactions.run_sync(work_and_wait, attempts=1))
    assert await asyncio.to_thread(done.wait, 30)
    return transaction, go


async def queueing_held_open(storage: Storage, key: str
                             ) -> tuple[asyncio.Future[None], threading.Event, list[str]]:
    """Ada's message ``key`` queued by a transaction left open until the event is set: the
    transaction's end, the event, and the queued message's id once it is queued."""
    ids: list[str] = []
    queueing, go = await held_open(storage, lambda uow: ids.extend(queue_all(uow, (key, "ada"))))
    return queueing, go, ids


@pytest.mark.postgres
async def test_a_message_queued_beside_an_earlier_ones_queueing_is_held_behind_it(
        storage: Storage) -> None:
    on_postgresql(storage)
    queueing, go, first = await queueing_held_open(storage, "k1")
    second = asyncio.create_task(asyncio.to_thread(queue, storage, "k2"))
    # Without the lock the second committed at once, QUEUED beside the first.
    assert await eventually(lambda: second.done() or waiting_for_a_lock(storage), timeout=10)
    go.set()
    await asyncio.wait_for(queueing, 30)
    later = await asyncio.wait_for(second, 30)
    assert [state(storage, first[0]), state(storage, later)] == [MessageStatus.QUEUED,
                                                                 MessageStatus.HELD]


@pytest.mark.postgres
async def test_a_queueing_beside_a_releasing_record_neither_deadlocks_nor_loses_the_order(
        storage: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ada's and Bob's first messages are recorded sent (Bob's releases his second) while new
    messages of both are queued: the record's rows are written when the queueing starts. Had
    the record locked Bob's scope only to release (after its rows), and the queueing both
    scopes before Ada's row, each would wait for the other."""
    on_postgresql(storage)
    now = storage.clock.now()
    bob_first, bob_second = queue(storage, "b1", profile="bob"), queue(storage, "b2", profile="bob")
    ada_first = queue(storage, "a1")
    claims, _ = storage.transactions.run_sync(
        lambda uow: claim_due(uow, now, LEASE, 10, SecretBox([]), "A"))
    assert sorted(c.profile_id for c in claims) == ["ada", "bob"]
    releasing, go = threading.Event(), threading.Event()
    release = held.release

    def release_when_told(*args: Any) -> int:
        releasing.set()
        assert go.wait(30)
        return release(*args)

    monkeypatch.setattr(held, "release", release_when_told)
    recording = asyncio.get_running_loop().run_in_executor(None, lambda: (
        storage.transactions.run_sync(lambda uow: repository.record_all(
            uow.session, [(c, after_success(c.attempts, c.message_id)) for c in claims], now),
            attempts=1)))
    assert await asyncio.to_thread(releasing.wait, 30)
    queueing = asyncio.create_task(asyncio.to_thread(
        storage.transactions.run_sync,
        lambda uow: queue_all(uow, ("a2", "ada"), ("b3", "bob")), attempts=1))
    assert await eventually(lambda: queueing.done() or waiting_for_a_lock(storage), timeout=10)
    go.set()
    await asyncio.wait_for(recording, 30)  # one attempt each: a deadlock would raise in one
    ada_second, bob_third = await asyncio.wait_for(queueing, 30)
    assert {name: state(storage, message) for name, message in [
        ("ada 1", ada_first), ("ada 2", ada_second), ("bob 1", bob_first),
        ("bob 2", bob_second), ("bob 3", bob_third)]} == {
        "ada 1": MessageStatus.SENT, "ada 2": MessageStatus.QUEUED,
        "bob 1": MessageStatus.SENT, "bob 2": MessageStatus.QUEUED,
        "bob 3": MessageStatus.HELD}


def nowait_locked(storage: Storage, message_ids: list[str]) -> set[str]:
    """The messages another transaction holds (each tried with NOWAIT)."""
    held_rows = set()
    with storage.transactions.db.engine.connect() as connection:
        for message_id in message_ids:
            try:
                with connection.begin():
                    connection.execute(text(
                        "SELECT 1 FROM messages WHERE workspace_id = :ws AND message_id = :id "
                        "FOR UPDATE NOWAIT"), {"ws": WS, "id": message_id})
            except Exception:
                held_rows.add(message_id)
    return held_rows


@pytest.mark.postgres
@pytest.mark.parametrize("write", ["record_all", "reserve_caps", "set_back"])
async def test_a_writer_of_several_claimed_messages_locks_their_scopes_before_their_rows(
        storage: Storage, write: str) -> None:
    """While another transaction holds Ada's scope, a write of Ada's and Bob's claimed
    messages waits for it holding neither message (had it locked Bob's first, a queueing
    holding both scopes and waiting for Bob's row would wait for it in a cycle)."""
    on_postgresql(storage)
    now = storage.clock.now()
    ids = [queue(storage, "a1"), queue(storage, "b1", profile="bob")]
    claims, _ = storage.transactions.run_sync(
        lambda uow: claim_due(uow, now, LEASE, 10, SecretBox([]), "A"))
    ordered = sorted(claims, key=lambda c: c.profile_id, reverse=True)  # Bob's first
    writes = {
        "record_all": lambda session: repository.record_all(
            session, [(c, after_success(c.attempts, c.message_id)) for c in ordered], now),
        "reserve_caps": lambda session: repository.reserve_caps(session, ordered, now),
        "set_back": lambda session: repository.set_back(session, ordered, now),
    }
    holding, go = threading.Event(), threading.Event()

    def hold_ada(uow: Any) -> None:
        held.lock_scopes(uow.session, [(WS, "ada", "email")])
        holding.set()
        assert go.wait(30)

    holder = asyncio.get_running_loop().run_in_executor(
        None, lambda: storage.transactions.run_sync(hold_ada, attempts=1))
    assert await asyncio.to_thread(holding.wait, 30)
    writing = asyncio.create_task(asyncio.to_thread(
        storage.transactions.run_sync, lambda uow: writes[write](uow.session), attempts=1))
    try:
        assert await eventually(lambda: waiting_for_a_lock(storage), timeout=10)
        assert not writing.done()
        assert await asyncio.to_thread(nowait_locked, storage, ids) == set()
    finally:
        go.set()
        await asyncio.wait_for(holder, 30)
        await asyncio.wait_for(writing, 30)


@pytest.mark.postgres
async def test_the_safety_net_beside_a_queueing_keeps_the_hold_it_marks(
        storage: Storage) -> None:
    """Ada's second message is an orphan (her first ended without releasing it) when her third
    is queued and the safety net's pass runs at once: the pass waits for the queueing's commit
    and releases the second knowing the third is held behind it, so the second's record
    releases the third (released with the holds of the pass's older snapshot, the second went
    out unmarked and the third waited HELD for the next pass, 60 s)."""
    on_postgresql(storage)
    now = storage.clock.now()
    first, second = queue(storage, "a1"), queue(storage, "a2")
    storage.transactions.run_sync(lambda uow: uow.session.execute(text(
        "UPDATE messages SET status = 'sent' WHERE message_id = :id"), {"id": first}))
    queueing, go, third = await queueing_held_open(storage, "a3")
    sweep = asyncio.create_task(asyncio.to_thread(
        storage.transactions.run_sync, lambda uow: held.release_orphans(uow.session, now),
        attempts=1))
    assert await eventually(lambda: sweep.done() or waiting_for_a_lock(storage), timeout=10)
    go.set()
    await asyncio.wait_for(queueing, 30)
    assert (await asyncio.wait_for(sweep, 30))[0] == 1
    (claim,), _ = storage.transactions.run_sync(
        lambda uow: claim_due(uow, now, LEASE, 10, SecretBox([]), "A"))
    assert (claim.message_id, claim.holds) == (second, True)
    storage.transactions.run_sync(lambda uow: repository.record_all(
        uow.session, [(claim, after_success(claim.attempts, claim.message_id))], now))
    assert state(storage, third[0]) is MessageStatus.QUEUED


@pytest.mark.postgres
async def test_a_message_queued_while_a_claim_takes_the_one_before_is_held_behind_it(
        storage: Storage) -> None:
    """The claim takes no scope lock: Ada's second message is queued while a claim of her first
    is under way (its row locked, SENDING not committed): the queueing's marking waits for the
    claim, finds the row it read changed (that version gone), and looks again: the second is
    HELD behind the first, SENDING (with the changed row skipped it went QUEUED, free to
    overtake the first once that waited for a retry)."""
    on_postgresql(storage)
    now = storage.clock.now()
    first = queue(storage, "k1")
    claimed: list[Any] = []
    claiming, go = await held_open(storage, lambda uow: claimed.extend(
        claim_due(uow, now, LEASE, 10, SecretBox([]), "A")[0]))
    assert len(claimed) == 1
    second = asyncio.create_task(asyncio.to_thread(queue, storage, "k2"))
    assert await eventually(lambda: second.done() or waiting_for_a_lock(storage), timeout=10)
    go.set()
    await asyncio.wait_for(claiming, 30)
    later = await asyncio.wait_for(second, 30)
    assert [state(storage, first), state(storage, later)] == [MessageStatus.SENDING,
                                                              MessageStatus.HELD]
