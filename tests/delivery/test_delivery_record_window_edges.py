"""The record window's edges (review rdeliv): a provider id longer than the column; a window
opened while an earlier one is written; breaker resets given back by a failed record."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from test_delivery_use_cases import (  # noqa: F401 - the fixtures
    WS,
    Mailbox,
    MessageStatus,
    OutgoingMessage,
    any_storage,
    email,
    lingering_rounds,
    messages,
    status_of,
)

from cjo_delivery.domain.sending import MAX_PROVIDER_MESSAGE_ID_LENGTH
from cjo_delivery.service_layer import send_round as send_round_module
from cjo_delivery.service_layer.send_round import (
    ProfileTurns,
    SendRound,
    _Arrivals,
    _RecordWindow,
)


@dataclass
class LongIdMailbox(Mailbox):
    """Answers one message with an id longer than messages.provider_message_id holds."""

    long_for: str = ""

    async def send(self, message: OutgoingMessage) -> str:
        answer = await super().send(message)
        if message.message_id == self.long_for:
            return "x" * (MAX_PROVIDER_MESSAGE_ID_LENGTH + 44)
        return answer


async def test_a_provider_id_longer_than_the_column_fails_no_record(
        any_storage: Any, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """PostgreSQL refused the record of the whole round: every message of it stayed SENDING
    and was sent again when its lease ran out. The over-long id is not kept; both end SENT."""
    monkeypatch.setattr(send_round_module, "_RECORD_RETRY_DELAYS", (0.0, 0.0, 0.0))
    accepted = await any_storage.transactions.run(lambda uow: messages.queue_messages(
        uow, WS, [email(f"k{i}", f"p{i}") for i in range(2)], "", lambda *a: None))
    ids = [a.message.message_id for a in accepted]
    mailbox = LongIdMailbox(long_for=ids[0])
    rounds = lingering_rounds(any_storage, mailbox, batch_size=2)
    await asyncio.wait_for(rounds.run(), 30)
    assert sorted(mailbox.sent) == sorted(ids)
    assert [status_of(any_storage, i) for i in ids] == [MessageStatus.SENT] * 2


def outcome(name: str) -> Any:
    return SimpleNamespace(claim=SimpleNamespace(workspace_id="ws", profile_id=name,
                                                 message_id=name))


async def test_a_window_opened_while_another_is_written_closes_when_all_is_in() -> None:
    """Window N writes round A's first outcome; meanwhile A's last outcome and round B's only
    one arrive and B opens window N+1. Once N's write ends nothing more is to come from any
    round: N+1 closes then, not at the end of its linger."""
    writes: list[tuple[float, list[str]]] = []
    first_write = asyncio.Event()

    async def write(group: list[Any]) -> None:
        writes.append((time.monotonic(), [o.claim.message_id for o in group]))
        if len(writes) == 1:
            await first_write.wait()

    window = _RecordWindow(2.0, write)
    fake = SimpleNamespace(_window=window, turns=ProfileTurns())
    a = _Arrivals(2, notify=window.arrived.set)
    b = _Arrivals(1, notify=window.arrived.set)
    window.live |= {a, b}
    rounds = [asyncio.create_task(SendRound._record_as_they_come(fake, arrivals))  # type: ignore[arg-type]
              for arrivals in (a, b)]
    a.add(outcome("a1"))
    deadline = time.monotonic() + 10
    while not writes and time.monotonic() < deadline:  # N closes at its linger
        await asyncio.sleep(0.01)
    a.add(outcome("a2"))
    b.add(outcome("b1"))
    await asyncio.sleep(0.05)  # B joins: window N+1 opens
    released = time.monotonic()
    first_write.set()  # N's write ends: every outcome of every round is in
    await asyncio.wait_for(asyncio.gather(*rounds), 10)
    assert sorted(writes[1][1]) == ["a2", "b1"]
    assert writes[1][0] - released < 1.0


def round_recording_with(resets: set[str]) -> Any:
    """What SendRound's record methods use of ``self``, with breakers holding ``resets``."""
    def take() -> list[str]:
        keys = sorted(resets)
        resets.clear()
        return keys

    return SimpleNamespace(
        turns=ProfileTurns(), transactions=None, clock=SimpleNamespace(now=lambda: None),
        breakers=SimpleNamespace(take_resets=take, give_back_resets=resets.update),
        settings=SimpleNamespace(forward_to_decisioning=False),
        _transition=lambda outcome, now: None, _left_sending=lambda claims: None,
        _wake=lambda uow: None)


async def test_resets_given_back_by_a_failed_record_outlive_the_bad_round(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A window fails for round A's outcomes (an error the fallback one by one does not get
    past) and gives its breaker resets back; A, retrying
    alone, takes them and fails every retry: it gives them back again, so the good round's
    record still zeroes the shared failure counts."""
    cleared: list[list[str]] = []

    async def record_outcomes(transactions: Any, changes: Any, now: Any, resets: Any = (), *,
                              give_back: Any, **kw: Any) -> list[Any]:
        if any(claim.message_id == "bad" for claim, _ in changes):
            give_back(resets)  # record_outcomes' part: what it did not write goes back
            raise RuntimeError("the database keeps refusing A")
        cleared.append(list(resets))
        return []

    monkeypatch.setattr(send_round_module, "record_outcomes", record_outcomes)
    monkeypatch.setattr(send_round_module, "_RECORD_RETRY_DELAYS", (0.0, 0.0, 0.0))
    resets: set[str] = {"breaker-of-good-round"}
    fake = round_recording_with(resets)
    fake._record_with_retry = lambda group, failed=None: SendRound._record_with_retry(  # type: ignore[arg-type]
        fake, group, failed)
    fake._window = _RecordWindow(0.0, lambda group: SendRound._record(fake, group))  # type: ignore[arg-type]
    a = _Arrivals(1, notify=fake._window.arrived.set)
    b = _Arrivals(1, notify=fake._window.arrived.set)
    fake._window.live |= {a, b}
    rounds = [asyncio.create_task(SendRound._record_as_they_come(fake, arrivals))  # type: ignore[arg-type]
              for arrivals in (a, b)]
    a.add(outcome("bad"))
    b.add(outcome("good"))
    results = await asyncio.wait_for(asyncio.gather(*rounds, return_exceptions=True), 10)
    assert isinstance(results[0], RuntimeError) and results[1] is None
    # The good round's record carried the reset, or it is still there for the next record.
    assert cleared == [["breaker-of-good-round"]] or resets == {"breaker-of-good-round"}
