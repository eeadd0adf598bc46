"""The record fallback's leftovers (review of the refused-record change): a message whose very
status the database refuses is not sent once per lease forever; a retry after the fallback
stopped mid-way does not call this sender's own records "claimed again"; a cancellation landing
while the breaker resets' transaction commits does not give them back to be written twice."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from structlog.testing import capture_logs
from test_delivery_refused_record import (
    PoisonMailbox,
    fact_ids,
    queue,
    refuse,
    refuse_poison_ids,
    rows,
)
from test_delivery_use_cases import (  # noqa: F401 - the fixtures
    BOX,
    Mailbox,
    any_storage,
    lingering_rounds,
)

from cjo_delivery.adapters.tables import provider_breakers
from cjo_delivery.service_layer import outcomes as outcomes_module
from cjo_delivery.service_layer import send_round as send_round_module
from cjo_delivery.service_layer.claims import claim_due
from cjo_delivery.service_layer.send_round import _Outcome
from support import Backend, eventually

SMTP = ("", "smtp")  # the deployment's route: its breaker's key


async def test_a_message_whose_status_is_refused_is_failed_after_its_leases_ran_out(
        any_storage: Any, backend: Backend, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """The database refuses the message's SENT status, even alone: each round sends it and
    leaves it SENDING. Its lease runs out three times (the default of
    CJO_DELIVERY_MAX_LEASE_EXPIRIES): the claim after the third fails it, with a note, instead
    of sending it; nothing claims it again. Before, it was sent once per lease, forever."""
    monkeypatch.setattr(send_round_module, "_RECORD_RETRY_DELAYS", (0.0, 0.0, 0.0))
    (message_id,) = await queue(any_storage, 1)
    refuse(any_storage, backend, "never_sent", f"message_id <> '{message_id}' OR status <> 'sent'")
    mailbox = Mailbox()
    rounds = lingering_rounds(any_storage, mailbox, batch_size=1)
    claimed = []
    for _ in range(5):
        claimed.append(await asyncio.wait_for(rounds.run(), 30))
        any_storage.clock.advance(timedelta(minutes=5, seconds=1))  # the lease runs out
    assert claimed == [1, 1, 1, 1, 0]
    assert mailbox.sent == [message_id] * 3
    ((status, provider_message_id, error),) = rows(any_storage, [message_id])
    assert (status, provider_message_id) == ("failed", "")
    assert error.startswith("not sent again: its lease ran out 3 times in a row with no outcome "
                            "recorded")
    assert fact_ids(any_storage) == [f"message_failed:{message_id}"]


async def test_only_a_claim_taking_over_a_run_out_lease_counts(
        any_storage: Any) -> None:  # noqa: F811
    """A message claimed again after its retry's wait (QUEUED) counts nothing; one claimed
    again after its sender died (SENDING, its lease run out) counts one."""
    await queue(any_storage, 1)
    lease = timedelta(minutes=5)

    async def claim(holder: str) -> Any:
        now = any_storage.clock.now()
        (found,), _ = await any_storage.transactions.run(
            lambda uow: claim_due(uow, now, lease, 1, BOX, holder))
        return found

    assert (await claim("a")).lease_expiries == 0
    any_storage.clock.advance(lease)  # "a" died mid-way
    assert (await claim("b")).lease_expiries == 1
    any_storage.transactions.run_sync(lambda uow: uow.session.execute(text(
        "UPDATE messages SET status = 'queued', lease_until = NULL")))  # "b"'s retry waits
    taken = await claim("c")
    assert (taken.lease_expiries, taken.attempts) == (1, 3)


def claimed_again(logs: list[dict[str, Any]]) -> list[str]:
    return [entry["message_id"] for entry in logs if "claimed again" in entry["event"]]


async def test_a_retry_after_the_fallback_stopped_mid_way_skips_what_it_recorded(
        any_storage: Any, backend: Backend, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    """The group is refused for one message's provider id; one by one, the database fails
    (not the data's fault) after a first message was recorded. The round's retry records only
    the others: before, it found the first no longer SENDING at its claim and logged it as
    claimed again by another sender (its data right, the log wrong)."""
    monkeypatch.setattr(send_round_module, "_RECORD_RETRY_DELAYS", (0.0, 0.0, 0.0))
    ids = await queue(any_storage, 3)
    refuse_poison_ids(any_storage, backend)
    record_each = outcomes_module.record_each
    alone: list[str] = []  # what was recorded one message at a time

    def failing_after_one(uow: Any, changes: Any, *args: Any, **kwargs: Any) -> None:
        if len(changes) == 1 and len(alone) == 1:
            alone.append("failed")
            raise RuntimeError("the connection was lost")
        record_each(uow, changes, *args, **kwargs)
        if len(changes) == 1 and not alone:
            alone.append(changes[0][0].message_id)

    monkeypatch.setattr(outcomes_module, "record_each", failing_after_one)
    mailbox = PoisonMailbox(poison_for=ids[1])
    rounds = lingering_rounds(any_storage, mailbox, batch_size=3)
    with capture_logs() as logs:
        assert await asyncio.wait_for(rounds.run(), 30) == 3
    assert alone[1:] == ["failed"]  # the database failed after one was recorded
    assert claimed_again(logs) == []
    assert [status for status, _, _ in rows(any_storage, ids)] == ["sent"] * 3
    assert sorted(mailbox.sent) == sorted(ids)
    assert fact_ids(any_storage) == sorted(f"message_sent:{i}" for i in ids)


@pytest.mark.parametrize("commits", [True, False], ids=["commits", "rolls-back"])
async def test_a_cancellation_during_the_resets_transaction_gives_them_back_only_if_unwritten(
        any_storage: Any, monkeypatch: pytest.MonkeyPatch, commits: bool,  # noqa: F811
) -> None:
    """A round's record is cancelled (its round failed) while the transaction carrying the
    breaker resets runs in its thread, which goes on regardless. Committed, the resets were
    written: given back too (before), the next record zeroed the failures other replicas had
    counted since. Rolled back, they go back for the next record."""
    await queue(any_storage, 1)
    now = any_storage.clock.now()
    rounds = lingering_rounds(any_storage, Mailbox())
    (claim,), _ = await any_storage.transactions.run(
        lambda uow: claim_due(uow, now, timedelta(minutes=5), 1, BOX, rounds.holder))
    any_storage.transactions.run_sync(lambda uow: uow.session.execute(
        insert(provider_breakers).values(workspace_id="", provider_id="smtp", failures=2,
                                         open_until=None, trial_until=None)))
    rounds.breakers.give_back_resets([SMTP])
    entered, go_on = threading.Event(), threading.Event()
    clear_failures = outcomes_module.clear_failures

    def held(uow: Any, keys: Any) -> None:
        clear_failures(uow, keys)
        entered.set()
        go_on.wait(10)
        if not commits:
            raise RuntimeError("the connection was lost")

    monkeypatch.setattr(outcomes_module, "clear_failures", held)
    recording = asyncio.create_task(rounds._record_with_retry(
        [_Outcome(claim, provider_message_id="<sent@mailbox>")]))
    await eventually(entered.is_set)
    recording.cancel()
    await asyncio.sleep(0)  # the cancellation reaches the record (no timing: one loop turn)
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(recording, 10)

    def stored(uow: Any) -> tuple[int, str]:
        failures = uow.session.execute(select(provider_breakers.c.failures)).scalar_one()
        status = uow.session.execute(text("SELECT status FROM messages")).scalar_one()
        return failures, status

    if commits:  # (before, the cancelled record did not wait for its thread)
        await eventually(lambda: any_storage.transactions.run_sync(stored)[1] == "sent")
        assert any_storage.transactions.run_sync(stored) == (0, "sent")
        assert rounds.breakers.take_resets() == []  # written once, not to be written again
    else:
        assert any_storage.transactions.run_sync(stored) == (2, "sending")
        assert rounds.breakers.take_resets() == [SMTP]


async def test_a_wave_failing_before_sending_does_not_count_its_leases_end(
        any_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A wave that fails before any provider has its messages (here the rate grants'
    transaction meets a database error three rounds in a row) leaves them SENDING (their
    profiles' next messages still wait) under a lease cut to the retry policy's first delay,
    whose end does not count against them: they are sent once the failure passes. Before, the
    fourth claim failed them "it may have been delivered" with no provider ever called."""
    from sqlalchemy.exc import OperationalError
    ids = await queue(any_storage, 2)
    failures = {"left": 3}
    reserve = send_round_module.SendRound._reserve

    async def flaky_reserve(self: Any, *args: Any) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("INSERT INTO rate_grants", {}, Exception("server closed"))
        await reserve(self, *args)

    monkeypatch.setattr(send_round_module.SendRound, "_reserve", flaky_reserve)
    mailbox = Mailbox()
    rounds = lingering_rounds(any_storage, mailbox)
    await asyncio.wait_for(rounds.run(), 30)
    assert [status for status, _, _ in rows(any_storage, ids)] == ["sending", "sending"]
    assert lease_expiries(any_storage, ids) == [-1, -1]
    any_storage.clock.advance(timedelta(seconds=31))  # past the retry policy's first delay
    for _ in range(3):
        await asyncio.wait_for(rounds.run(), 30)
        any_storage.clock.advance(timedelta(seconds=31))
    assert sorted(mailbox.sent) == sorted(ids)
    assert [status for status, _, _ in rows(any_storage, ids)] == ["sent", "sent"]


async def test_a_recorded_outcome_starts_the_lease_count_again(
        any_storage: Any) -> None:  # noqa: F811
    """``lease_expiries`` counts run-out leases in a row: an outcome recorded in between (a
    transient failure queued for a retry) starts it again, so takeovers spread over a
    message's life do not add up to failing it unsent."""
    from cjo_delivery.domain.sending import ProviderError
    (message_id,) = await queue(any_storage, 1)
    lease = timedelta(minutes=5)

    async def crash(holder: str) -> None:  # claims, then dies before any outcome
        now = any_storage.clock.now()
        await any_storage.transactions.run(lambda uow: claim_due(uow, now, lease, 1, BOX,
                                                                 holder))
        any_storage.clock.advance(lease + timedelta(seconds=1))

    await crash("a")
    await crash("b")  # took a's over: 1
    mailbox = Mailbox(failures=[ProviderError("try later", transient=True)])
    rounds = lingering_rounds(any_storage, mailbox)
    await asyncio.wait_for(rounds.run(), 30)  # took b's over (2), recorded a retry: 0
    assert [status for status, _, _ in rows(any_storage, [message_id])] == ["queued"]
    assert lease_expiries(any_storage, [message_id]) == [0]
    any_storage.clock.advance(timedelta(hours=1))  # past the retry's delay
    await crash("c")  # from the queue: not counted
    await crash("d")  # took c's over: 1
    await asyncio.wait_for(rounds.run(), 30)  # took d's over: 2, under the cap of 3
    assert mailbox.sent == [message_id]
    assert [status for status, _, _ in rows(any_storage, [message_id])] == ["sent"]


def lease_expiries(storage: Any, ids: list[str]) -> list[int]:
    from cjo_delivery.adapters.tables import messages
    return storage.transactions.run_sync(lambda uow: [
        uow.session.execute(select(messages.c.lease_expiries).where(
            messages.c.message_id == message_id)).scalar_one() for message_id in ids])
