"""Recording a step round's outcome: a database failure fails no enrollment (they run again
after their lease, sending with the same idempotency key), while an outcome that cannot be
stored fails only its own enrollment. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from orchestration_support import Ids, RecordingPeers, migrated_database, transactions_on
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from cjo_orchestration.adapters.tables import enrollments
from cjo_orchestration.domain.enrollment import EnrollmentState
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    JourneyGraph,
    Node,
    SendAction,
)
from cjo_orchestration.service_layer import enrollment, journeys, steps
from cjo_orchestration.service_layer.enrollment import Entrant
from cjo_orchestration.service_layer.steps import StepRound
from cjo_orchestration.settings import load_engine_settings
from cjo_platform.clock import ManualClock
from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions
from support import Backend

WS = "ws"
MAIL = JourneyGraph(trigger=EventTrigger("visit"), entry_node_id="mail",
                    nodes=(Node("mail", SendAction("hello", Channel.EMAIL, "done")),
                           Node("done", ExitAction())))
SETTINGS = load_engine_settings(Env({}))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 6, 1, 9, tzinfo=UTC))


@pytest.fixture
def tx(backend: Backend, clock: ManualClock) -> Iterator[Transactions]:
    db = migrated_database(backend)
    try:
        transactions = transactions_on(db, clock)
        transactions.run_sync(lambda uow: journeys.create(uow, WS, "j1", "Mail", MAIL))
        transactions.run_sync(lambda uow: journeys.publish(uow, WS, "j1", set()))
        ids = Ids()
        for profile in ("ada", "bob"):
            transactions.run_sync(lambda uow, p=profile: enrollment.enroll_profile(
                uow, WS, "j1", Entrant(p, {"email": f"{p}@example.com"}, {}), f"r-{p}", "",
                ids))
        yield transactions
    finally:
        db.dispose()


def states(tx: Transactions) -> dict[str, str]:
    return {r.profile_id: r.state for r in tx.run_sync(lambda uow: uow.session.execute(
        select(enrollments.c.profile_id, enrollments.c.state)).all())}


def failing_record(monkeypatch: pytest.MonkeyPatch, fails: Any) -> None:
    """``steps.record`` raises ``fails(transitions)`` when that returns an error."""
    real = steps.record

    def record(uow: Any, token: str, transitions: Sequence[Any],
               events_waiting: Any = None, **options: Any) -> int:
        if (error := fails(transitions)) is not None:
            raise error
        return real(uow, token, transitions, events_waiting, **options)

    monkeypatch.setattr(steps, "record", record)


async def test_a_database_failure_while_recording_fails_no_enrollment(
        tx: Transactions, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def down_twice(transitions: Sequence[Any]) -> Exception | None:
        # The database drops the batch's write and the next one, then is back.
        calls["n"] += 1
        return (OperationalError("UPDATE", {}, Exception("server closed the connection"))
                if calls["n"] <= 2 else None)

    failing_record(monkeypatch, down_twice)
    peers = RecordingPeers("ada", "bob")
    round = StepRound(tx, peers, SETTINGS)
    for _ in range(2):
        with pytest.raises(OperationalError):  # the worker backs off
            await round.run()
        assert states(tx) == {"ada": "active", "bob": "active"}
        assert not await round.run()  # still leased: not run again at once
        clock.advance(timedelta(seconds=SETTINGS.lease_seconds + 1))
    await round.run()
    assert states(tx) == {"ada": EnrollmentState.COMPLETED.value,
                          "bob": EnrollmentState.COMPLETED.value}
    # Sent again after each lease, with the same keys: delivery accepts each once.
    keys = [item.idempotency_key for item in peers.sent]
    assert len(keys) == 6 and len(set(keys)) == 2


async def test_an_outcome_that_cannot_be_stored_fails_only_its_enrollment(
        tx: Transactions, monkeypatch: pytest.MonkeyPatch) -> None:
    def ada_cannot_be_stored(transitions: Sequence[Any]) -> Exception | None:
        mine = any(t.enrollment.profile_id == "ada"
                   and t.enrollment.state is EnrollmentState.COMPLETED for t in transitions)
        return ValueError("a value the database cannot store") if mine else None

    failing_record(monkeypatch, ada_cannot_be_stored)
    await StepRound(tx, RecordingPeers("ada", "bob"), SETTINGS).run()
    assert states(tx) == {"ada": EnrollmentState.FAILED.value,
                          "bob": EnrollmentState.COMPLETED.value}


def leases(tx: Transactions) -> dict[str, str | None]:
    return {r.profile_id: r.lease_token for r in tx.run_sync(lambda uow: uow.session.execute(
        select(enrollments.c.profile_id, enrollments.c.lease_token)).all())}


async def test_a_round_recorded_well_inside_its_leases_does_not_read_them_again(
        tx: Transactions, monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[int] = []
    real = steps.enrollment_store.still_leased

    def still_leased(session: Any, token: str, keys: Any) -> Any:
        checks.append(len(keys))
        return real(session, token, keys)

    monkeypatch.setattr(steps.enrollment_store, "still_leased", still_leased)
    await StepRound(tx, RecordingPeers("ada", "bob"), SETTINGS).run()
    assert states(tx) == {"ada": EnrollmentState.COMPLETED.value,
                          "bob": EnrollmentState.COMPLETED.value}
    assert checks == []  # nobody can have taken a lease over yet: not read again
    assert leases(tx) == {"ada": None, "bob": None}


class SlowPeers(RecordingPeers):
    """The send takes so long (the clock moves on during it) that the leases run out, and
    another worker claims the enrollments before this round records."""

    def __init__(self, tx: Transactions, clock: ManualClock, *profile_ids: str) -> None:
        super().__init__(*profile_ids)
        self.tx, self.clock = tx, clock

    async def send(self, workspace_id: str, items: Sequence[Any]) -> list[Any]:
        answers = await super().send(workspace_id, items)
        self.clock.advance(timedelta(seconds=SETTINGS.lease_seconds + 1))
        taken = self.tx.run_sync(lambda uow: steps.claim_due(
            uow, uow.now(), SETTINGS.lease_seconds, "other-worker", 10))
        assert len(taken) == len(items)
        return answers


async def test_a_round_whose_leases_ran_out_leaves_its_enrollments_to_their_new_holder(
        tx: Transactions, clock: ManualClock) -> None:
    peers = SlowPeers(tx, clock, "ada", "bob")
    await StepRound(tx, peers, SETTINGS).run()
    # Nothing of the late round was written: the new holder runs the step and records it.
    assert states(tx) == {"ada": "active", "bob": "active"}
    assert leases(tx) == {"ada": "other-worker", "bob": "other-worker"}
