"""PostgreSQL: the statements over held messages read a few rows per scope (or per message of
the safety net's batch) also when the table's statistics were made while few messages were
held and a backlog built since (a provider's outage holds thousands before autovacuum's next
ANALYZE). Trusting those statistics ("status = 'held'": a few rows), a release of one record's
scopes hashed or scanned every held message of every workspace, and a queueing's ``holds``
every unfinished one, until the next ANALYZE. auto_explain hands the test the rows each plan
node read."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from test_delivery_consent_tenants import Storage
from test_delivery_plans_after_growth import Plans, explained_storage

from cjo_delivery.adapters import held
from support import Backend

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
WORKSPACES = 7
BACKLOG = 3_000  # profiles, each a deferred message and two held behind it: 6,000 held
HISTORY = 20_000  # sent messages

# Messages ``g`` of profile ``<prefix>(g / 3)`` of workspace ``ws-<profile % 7>``: the
# profile's first ``first``, the other two ``rest``.
INSERT = (
    "INSERT INTO messages (workspace_id, message_id, idempotency_key, profile_id, address,"
    " channel, content, journey_id, enrollment_id, status, attempts, error,"
    " provider_message_id, next_attempt_time, traceparent, create_time, update_time,"
    " queue_order, holds)"
    " SELECT 'ws-' || ((g / 3) % 7), :prefix || g, :prefix || g, :prefix || (g / 3), 'a@x',"
    " 'email', ''::bytea, '', '', CASE WHEN g % 3 = 0 THEN :first ELSE :rest END, 1, '', '',"
    " :now, '', :now, :now, :order + g, g % 3 <> 2 FROM generate_series(0, :n - 1) AS g")
# A plan node over messages: its rows per loop and loops; the rows it read and dropped.
NODE = re.compile(r"->\s+|^\s*\w")
READ = re.compile(r" on messages .*\(actual time=\S+ rows=(\d+) loops=(\d+)\)")
DROPPED = re.compile(r"Rows Removed by (?:Filter|Index Recheck): (\d+)")
RELEASE = "SET status = 'queued'"


@pytest.fixture
def backlog(backend: Backend) -> Iterator[tuple[Storage, Plans]]:
    """The statistics made beside a history of sent messages and ten profiles' held ones;
    autovacuum's ANALYZE kept off; then 6,000 held messages, each profile's two behind a
    deferred one."""
    with explained_storage(backend, analyze=True, prepare_threshold=None) as (storage, plans):
        now = storage.clock.now()
        with storage.transactions.db.engine.begin() as connection:
            connection.execute(text("ALTER TABLE messages SET (autovacuum_enabled = off)"))
            for prefix, first, rest, n, order in (("s", "sent", "sent", HISTORY, 0),
                                                  ("y", "queued", "held", 30, 10**7)):
                connection.execute(text(INSERT), {"prefix": prefix, "first": first,
                                                  "rest": rest, "n": n, "now": now,
                                                  "order": order})
            connection.execute(text("ANALYZE messages"))
            connection.execute(text(INSERT), {"prefix": "b", "first": "deferred",
                                              "rest": "held", "n": 3 * BACKLOG, "now": now,
                                              "order": 2 * 10**7})
        yield storage, plans


def rows_read(plans: Plans, statement: str) -> tuple[int, str]:
    """The rows the one plan captured of a statement holding ``statement`` read from messages,
    kept or dropped, over all loops; and the plan."""
    (plan,) = [p for p in plans.found if statement in p]
    total, loops = 0, 0
    for line in plan.splitlines():
        if NODE.search(line):
            read = READ.search(line)
            loops = int(read.group(2)) if read else 0
            total += int(read.group(1)) * loops if read else 0
        elif dropped := DROPPED.search(line):
            total += int(dropped.group(1)) * loops
    return total, plan


def scopes(profiles: range) -> list[held.Scope]:
    return [(f"ws-{p % WORKSPACES}", f"b{p}", "email") for p in profiles]


def explained(storage: Storage, plans: Plans, run: Callable[[Any], Any]) -> Any:
    plans.capturing = True
    try:
        return storage.transactions.run_sync(run)
    finally:
        plans.capturing = False


def final(storage: Storage, released: list[held.Scope]) -> None:
    """The deferred message of each of ``released`` sent (its record's release is the test's)."""
    storage.transactions.run_sync(lambda uow: uow.session.execute(text(
        "UPDATE messages SET status = 'sent' WHERE status = 'deferred' AND (workspace_id, "
        "profile_id) IN (SELECT * FROM unnest(CAST(:w AS text[]), CAST(:p AS text[])))"),
        {"w": [w for w, _, _ in released], "p": [p for _, p, _ in released]}))


def test_a_release_probes_its_scopes_after_a_backlog_built(
        backlog: tuple[Storage, Plans]) -> None:
    storage, plans = backlog
    released = scopes(range(0, 500, 50))
    final(storage, released)
    now = storage.clock.now()

    def release(uow: Any) -> int:
        held.lock_scopes(uow.session, released)
        return held.release(uow.session, released, now)

    assert explained(storage, plans, release) == len(released)  # each scope's first
    # A few rows per scope (its held ones, the checks of the earlier ones); before, every held
    # message (6,000) was read, or every deferred one per scope.
    read, plan = rows_read(plans, RELEASE)
    assert read <= 20 * len(released), plan


def test_a_queueing_marks_its_scopes_unfinished_messages_after_a_backlog_built(
        backlog: tuple[Storage, Plans]) -> None:
    storage, plans = backlog
    queued = [(profile, channel) for _, profile, channel in scopes(range(0, 70, 7))]

    def hold(uow: Any) -> list[tuple[str, str, bool]]:
        held.lock_scopes(uow.session, [("ws-0", p, c) for p, c in queued])
        return held.hold_behind(uow.session, "ws-0", queued)

    assert len(explained(storage, plans, hold)) == 3 * len(queued)
    # Before: every unfinished message (9,000) hashed, or scanned and the scopes probed per
    # message.
    read, plan = rows_read(plans, "SET holds = true")
    assert read <= 20 * len(queued), plan


def test_a_batch_of_the_safety_net_probes_its_messages_after_a_backlog_built(
        backlog: tuple[Storage, Plans]) -> None:
    storage, plans = backlog
    now = storage.clock.now()
    batch = storage.transactions.run_sync(lambda uow: uow.session.execute(
        held._ORPHANS["postgresql"][0], {"now": now, "batch": 50, "after_workspace": "",
                                         "after_profile": "", "after_channel": "",
                                         "after_order": -1}).all())
    first = {(r.workspace_id, r.profile_id, r.channel) for r in batch}
    final(storage, sorted(first))
    released, _ = explained(storage, plans,
                            lambda uow: held.release_orphans(uow.session, now, batch=50))
    assert released == len(first)  # each scope's first
    # Before: every held message (6,000) hashed.
    read, plan = rows_read(plans, RELEASE)
    assert read <= 20 * len(batch), plan
