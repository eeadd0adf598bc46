"""A message whose record the database refuses (a value it cannot store, a constraint) costs
only itself: the group it was recorded with falls back to one message at a time, the refused
one is recorded with its status alone, and when even that is refused it is left SENDING for its
lease. Before, the round retried the whole group and gave up: every message of it, already
handed to its provider, stayed SENDING and was sent again at its lease's end, forever."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from structlog.testing import capture_logs
from test_delivery_use_cases import (  # noqa: F401 - the fixtures
    BOX,
    WS,
    Mailbox,
    any_storage,
    email,
    lingering_rounds,
    messages,
)

from cjo.analytics.v1 import fact_pb2
from cjo_delivery.adapters.tables import provider_breakers
from cjo_delivery.domain.messages import MessageStatus
from cjo_delivery.domain.sending import (
    UNSTORED_ERROR,
    OutgoingMessage,
    Transition,
    after_success,
)
from cjo_delivery.service_layer import send_round as send_round_module
from cjo_delivery.service_layer.claims import claim_due
from cjo_delivery.service_layer.outcomes import record_outcomes
from cjo_platform.facts import FACTS_TOPIC
from support import Backend

POISON = "poison"


@dataclass
class PoisonMailbox(Mailbox):
    """Answers one message with a provider id the database refuses (refuse_poison_ids)."""

    poison_for: str = ""

    async def send(self, message: OutgoingMessage) -> str:
        answer = await super().send(message)
        return f"{POISON}-{answer}" if message.message_id == self.poison_for else answer


def refuse(storage: Any, backend: Backend, name: str, check: str) -> None:
    """The database refuses a messages row failing ``check`` (SQL on the new row's columns):
    a CHECK constraint on PostgreSQL, a trigger on SQLite."""
    def add(uow: Any) -> None:
        if backend.kind == "postgresql":
            uow.session.execute(text(f"ALTER TABLE messages ADD CONSTRAINT {name} "
                                     f"CHECK ({check})"))
        else:
            new_row = re.sub(r"\b(message_id|provider_message_id|status|error)\b",
                             r"NEW.\1", check)
            uow.session.execute(text(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON messages WHEN NOT ({new_row}) "
                f"BEGIN SELECT RAISE(ABORT, '{name}'); END"))
    storage.transactions.run_sync(add)


def refuse_poison_ids(storage: Any, backend: Backend) -> None:
    refuse(storage, backend, "poison_id", f"provider_message_id NOT LIKE '{POISON}%'")


def refuse_leaving_sending(storage: Any, backend: Backend, message_id: str) -> None:
    """Even the minimal record of ``message_id`` is refused: it may not leave SENDING."""
    refuse(storage, backend, "stuck",
           f"message_id <> '{message_id}' OR status IN ('queued', 'sending')")


def rows(storage: Any, ids: list[str]) -> list[tuple[str, str, str]]:
    """(status, provider_message_id, error) of each message."""
    def read(uow: Any) -> list[tuple[str, str, str]]:
        found = [messages.get_message(uow, WS, i, i) for i in ids]
        return [(m.status.value, m.provider_message_id, m.error) for m in found]
    return storage.transactions.run_sync(read)


def fact_ids(storage: Any) -> list[str]:
    outbox = storage.transactions.outbox
    assert outbox is not None
    return storage.transactions.run_sync(lambda uow: sorted(
        fact_pb2.Fact.FromString(row.payload).fact_id
        for row in uow.session.execute(outbox.table.select()
                                       .where(outbox.table.c.topic == FACTS_TOPIC)).all()))


async def queue(storage: Any, count: int) -> list[str]:
    accepted = await storage.transactions.run(lambda uow: messages.queue_messages(
        uow, WS, [email(f"k{i}", f"p{i}") for i in range(count)], "", lambda *a: None))
    return [a.message.message_id for a in accepted]


async def test_a_refused_provider_id_costs_only_its_message_its_status_is_recorded(
        any_storage: Any, backend: Backend, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setattr(send_round_module, "_RECORD_RETRY_DELAYS", (0.0, 0.0, 0.0))
    ids = await queue(any_storage, 3)
    refuse_poison_ids(any_storage, backend)
    mailbox = PoisonMailbox(poison_for=ids[1])
    rounds = lingering_rounds(any_storage, mailbox, batch_size=3)
    assert await asyncio.wait_for(rounds.run(), 30) == 3
    assert sorted(mailbox.sent) == sorted(ids)
    assert rows(any_storage, ids) == [
        ("sent", f"<{ids[0]}@mailbox>", ""), ("sent", "", ""), ("sent", f"<{ids[2]}@mailbox>", "")]
    # Each message's fact once: the refused group's rolled back, the minimal record's kept.
    assert fact_ids(any_storage) == sorted(f"message_sent:{i}" for i in ids)


async def test_a_message_whose_very_status_is_refused_is_left_to_its_lease(
        any_storage: Any, backend: Backend, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setattr(send_round_module, "_RECORD_RETRY_DELAYS", (0.0, 0.0, 0.0))
    ids = await queue(any_storage, 3)
    refuse_leaving_sending(any_storage, backend, ids[0])
    mailbox = Mailbox()
    rounds = lingering_rounds(any_storage, mailbox, batch_size=3)
    holder = rounds.holder
    with capture_logs() as logs:
        assert await asyncio.wait_for(rounds.run(), 30) == 3
    assert sorted(mailbox.sent) == sorted(ids)
    assert [status for status, _, _ in rows(any_storage, ids)] == ["sending", "sent", "sent"]
    assert fact_ids(any_storage) == sorted(f"message_sent:{i}" for i in ids[1:])
    assert [entry["message_id"] for entry in logs if entry["log_level"] == "error"] == [ids[0]]
    # Its lease is no longer this process's: its profile's next messages wait for it here too.
    assert rounds.holder != holder


async def test_the_fallback_keeps_a_newer_senders_result_and_writes_the_breaker_resets(
        any_storage: Any, backend: Backend) -> None:  # noqa: F811
    """record_outcomes itself: a group refused for one message's id, another of whose messages
    was claimed again meanwhile, and a failed message whose error text is refused."""
    ids = await queue(any_storage, 4)
    now = any_storage.clock.now()
    claims, _ = await any_storage.transactions.run(
        lambda uow: claim_due(uow, now, timedelta(minutes=5), 4, BOX, "me"))
    by_id = {claim.message_id: claim for claim in claims}
    refuse_poison_ids(any_storage, backend)
    refuse(any_storage, backend, "poison_error", f"error NOT LIKE '{POISON}%'")

    def taken_over_and_breaker(uow: Any) -> None:
        # ids[2] was claimed again by another sender after this one's lease ran out.
        uow.session.execute(text("UPDATE messages SET attempts = attempts + 1 "
                                 "WHERE message_id = :m"), {"m": ids[2]})
        uow.session.execute(insert(provider_breakers).values(
            workspace_id="", provider_id="smtp", failures=3, open_until=None,
            trial_until=None))
    any_storage.transactions.run_sync(taken_over_and_breaker)
    failed = Transition(MessageStatus.FAILED, 1, None, f"{POISON}: no such mailbox", "")
    changes = [(by_id[ids[0]], after_success(1, "fine")),
               (by_id[ids[1]], after_success(1, f"{POISON}-id")),
               (by_id[ids[2]], after_success(1, "late")),
               (by_id[ids[3]], failed)]
    left = await record_outcomes(any_storage.transactions, changes, now, [("", "smtp")])
    assert left == []
    assert rows(any_storage, ids) == [("sent", "fine", ""), ("sent", "", ""),
                                      ("sending", "", ""), ("failed", "", UNSTORED_ERROR)]
    assert fact_ids(any_storage) == sorted(
        [f"message_sent:{ids[0]}", f"message_sent:{ids[1]}", f"message_failed:{ids[3]}"])
    failures = any_storage.transactions.run_sync(lambda uow: uow.session.execute(
        select(provider_breakers.c.failures)).scalar_one())
    assert failures == 0
