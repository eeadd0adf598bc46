"""An event round over the events of 1,200 workspaces (CJO_ORCHESTRATION_EVENT_BATCH goes up
to 5,000), each enrolling its person in its workspace's journey, then a repeat of each that
finds the enrollment: one round each, on SQLite and PostgreSQL.

The round reads the people's retirements, watched enrollments and histories by (workspace,
...) keys (cjo_platform.db.keys_in). An OR of a condition per workspace failed on SQLite past
~1,000 workspaces in a round ("Expression tree is too large (maximum depth 1000)": the round's
events were retried, then went to the dead letters one by one) and cost PostgreSQL seconds of
planning.
"""

from __future__ import annotations

from datetime import UTC, datetime

from orchestration_support import Ids, clocked_transactions
from test_orchestration_use_cases import cart_reminder, event

from cjo_orchestration.service_layer import events, journeys
from cjo_platform.clock import ManualClock
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from support import Backend

WORKSPACES = 1200


def _publish_all(uow: UnitOfWork) -> None:
    for i in range(WORKSPACES):
        journeys.create(uow, f"ws{i:04d}", "j1", "Cart reminder", cart_reminder())
        journeys.publish(uow, f"ws{i:04d}", "j1", set())


def _receive_all(tx: Transactions, event_id: str) -> None:
    def receive(uow: UnitOfWork) -> None:
        for i in range(WORKSPACES):
            events.receive(uow, f"ws{i:04d}", [event(event_id, "ada")])

    tx.run_sync(receive)


def test_one_round_applies_the_events_of_1200_workspaces(backend: Backend) -> None:
    with clocked_transactions(backend, ManualClock(datetime(2026, 5, 4, 9, tzinfo=UTC))) as tx:
        tx.run_sync(_publish_all)
        ids = Ids()
        _receive_all(tx, "e1")
        applied = tx.run_sync(lambda uow: events.apply_inbox(uow, 5000, ids))
        assert (applied.handled, applied.enrolled) == (WORKSPACES, WORKSPACES)
        # Re-entry NEVER: each person's second event finds the enrollment, and enrolls nobody.
        _receive_all(tx, "e2")
        again = tx.run_sync(lambda uow: events.apply_inbox(uow, 5000, ids))
        assert (again.handled, again.enrolled) == (WORKSPACES, 0)
