"""PostgreSQL, READ COMMITTED: a message held behind two unfinished messages whose final
outcomes are recorded by two overlapping transactions is released by the second to commit
(releases of one scope wait for each other), not left HELD for the safety net."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from test_delivery_consent_tenants import Storage, storage
from test_delivery_held_release import LEASE, waiting_for_a_lock
from test_delivery_waiting_order import queue, state

from cjo_delivery.adapters import repository
from cjo_delivery.domain.messages import MessageStatus
from cjo_delivery.domain.sending import after_success
from cjo_delivery.service_layer.claims import claim_due
from cjo_platform.secret_box import SecretBox
from support import eventually

__all__ = ["storage"]  # the fixture


@pytest.mark.postgres
async def test_two_blockers_recorded_at_once_release_the_message_held_behind_both(
        storage: Storage) -> None:
    if storage.transactions.db.engine.dialect.name != "postgresql":
        pytest.skip("overlapping writers: PostgreSQL (SQLite has one writer)")
    now = storage.clock.now()
    newsletter = queue(storage, "k1")
    receipt = queue(storage, "k2", transactional=True)  # not held behind the newsletter
    later = queue(storage, "k3")                         # held behind both
    assert [state(storage, i) for i in (newsletter, receipt, later)] == [
        MessageStatus.QUEUED, MessageStatus.QUEUED, MessageStatus.HELD]
    claims, _ = storage.transactions.run_sync(
        lambda uow: claim_due(uow, now, LEASE, 10, SecretBox([]), "A"))
    assert len(claims) == 2 and all(c.holds for c in claims)
    first, second = claims
    recorded, go = threading.Event(), threading.Event()

    def record_and_wait(uow: Any) -> None:
        repository.record_all(uow.session, [(first, after_success(first.attempts, "x"))], now)
        recorded.set()
        assert go.wait(30)

    def record(uow: Any) -> None:
        repository.record_all(uow.session, [(second, after_success(second.attempts, "y"))],
                              now)

    recording = asyncio.get_running_loop().run_in_executor(
        None, lambda: storage.transactions.run_sync(record_and_wait, attempts=1))
    assert await asyncio.to_thread(recorded.wait, 30)
    # The second record, while the first is open: it waits for the first's commit before its
    # release (it committed at once, the held message left HELD, without the fix).
    other = asyncio.create_task(asyncio.to_thread(
        lambda: storage.transactions.run_sync(record, attempts=1)))
    assert await eventually(lambda: other.done() or waiting_for_a_lock(storage), timeout=10)
    go.set()
    await asyncio.wait_for(recording, 30)
    await asyncio.wait_for(other, 30)
    assert [state(storage, i) for i in (newsletter, receipt)] == [MessageStatus.SENT] * 2
    assert state(storage, later) is MessageStatus.QUEUED
