"""Retention: rows past their kind's age are deleted (or their bulky columns blanked) in the
background, a small batch per transaction, so tables that grow with traffic (request logs,
events, inboxes, step history, message bodies, decisions) stay bounded.

A service lists its kinds as :class:`Rule` s (the table, the column that dates a row, the
condition a row must meet to be removable, and what to do: delete, or rewrite some columns);
:func:`configure` reads each kind's age from ``CJO_<SERVICE>_RETENTION_<KIND>_DAYS`` (0 keeps the
kind forever) and :class:`RetentionWorker` applies them. Retention is per environment, not per
workspace: every workspace of a deployment keeps a kind equally long.

A kind's rows are walked in passes over its age index, in (age, primary key) order, from a
cursor each process keeps per kind: a batch reads the next ``batch`` rows older than the
cut-off after the cursor (a keyset read through the index on the age column), then selects the
removable ones among them, locks those with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and
deletes or rewrites exactly those rows by primary key in the same short transaction, and moves
the cursor past the window. A batch therefore reads at most ``batch`` rows (plus the rows that
share the age of its first and last row) however many older rows a kind must keep: rows kept
are looked at once per pass, not once per batch (before, every batch walked them all from the
head of the index: 150-370 ms a batch with 300,000 kept rows on PostgreSQL). When a pass
reaches the cut-off its cursor stays there and follows the rows that come of age; a new pass
from the oldest row starts once the last one reached the cut-off and :data:`PASS_INTERVAL`
after it began, to find kept rows that became removable since (an enrollment that ended, a
decision learned). A pass that takes longer than that goes on to the cut-off first: restarted
on time, it would never reach the rows behind its first day's walk. (Partial indexes
on the removable condition could not do it for every kind: steps' condition is on another
table, decisions' depends on the time now.) Two replicas walk
with cursors of their own: they skip each other's locked rows, and a row removed twice is
harmless. A rule that fails (a bug, a lock timeout) is logged and counted, and the other rules
go on; the worker tries it again next round.

A backlog drains in batches back to back, and on SQLite each holds the database's only writer:
the service's own writes (ingest, inbox, steps) queued behind them (p99 300-450 ms during a
drain against 5-10 ms idle). So retention rests after each batch in proportion to how long it
took: ``CJO_<SERVICE>_RETENTION_BUSY_PERCENT`` (50 on SQLite, the other half of the time left
to the hot path; 100, no rest, on PostgreSQL, whose writers do not queue behind each other).
"""

from __future__ import annotations

from asyncio import sleep
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    not_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cjo_platform.config import Env
from cjo_platform.db.planning import PLANNED_EACH_RUN
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.metrics import meter
from cjo_platform.worker import PollingWorker

log = get_logger(__name__)

DEFAULT_BATCH = 1000
DEFAULT_POLL_SECONDS = 60.0
MAX_POLL_SECONDS = 86_400.0  # a day: longer (or inf) and retention ran once, then never
# How often a kind's walk starts again from its oldest row (once the last pass reached the
# cut-off), to find the rows it kept that became removable since. Between passes only rows that
# come of age are read, so a table that keeps many old rows (decisions a contact limit still
# counts) costs one walk of them a day.
PASS_INTERVAL = timedelta(days=1)
# Shared kinds every service has (cjo_platform.service.shared_tables).
REQUEST_LOG_DAYS = 7  # a client retries within minutes; a week covers any sane retry policy
DEAD_LETTERS_DAYS = 0  # every letter is unresolved (a replay removes it): kept until replayed
# The share of a drain's time its batches may hold the database (see the module's docstring).
SQLITE_BUSY_PERCENT = 50


@dataclass(frozen=True)
class Rule:
    """One kind of data and how long it is kept.

    ``removable`` builds the condition a row must meet besides its age (what is still needed is
    never touched: pending rows, active enrollments, open windows). ``needed``, given the time
    now, builds the condition of rows still needed for a while whatever the configured days
    (a decision a contact limit still counts): never removed. ``rewrite`` turns a row (its
    primary key and ``read`` columns) and the time now into the values that replace its bulky
    columns: then the row is kept, and ``indexed`` or ``removable`` must exclude rows already
    rewritten. ``indexed`` is the condition of the age column's partial index (PostgreSQL),
    where it has one: a pass walks only those rows, and rows outside it are never removed."""

    kind: str
    table: Table
    age: Column[Any]
    default_days: int
    removable: Callable[[], ColumnElement[bool]] | None = None
    rewrite: Callable[[Row[Any], datetime], Mapping[str, Any]] | None = None
    read: Sequence[Column[Any]] = ()
    description: str = ""
    needed: Callable[[datetime], ColumnElement[bool]] | None = None
    indexed: Callable[[], ColumnElement[bool]] | None = None


@dataclass(frozen=True)
class Configured:
    rule: Rule
    days: int  # 0: kept forever


@dataclass
class Outcome:
    """What the last round did per kind: rows removed, and the error of a failed kind."""

    removed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def setting_name(service: str, kind: str) -> str:
    return f"CJO_{service.upper()}_RETENTION_{kind.upper()}_DAYS"


def configure(env: Env, service: str, rules: Sequence[Rule]) -> list[Configured]:
    """Each rule with its age from the environment (validated with the other settings)."""
    kinds = [r.kind for r in rules]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"retention kinds repeat: {kinds}")
    return [Configured(r, env.int(setting_name(service, r.kind), r.default_days, minimum=0,
                                  maximum=100 * 366))
            for r in rules]


@dataclass
class Cursor:
    """Where a kind's pass stands in one process: when it began, the (age, primary key) of the
    last row it read (None: the pass starts from the oldest row), and whether its last batch
    reached the cut-off (read less than a full window)."""

    started: datetime | None = None
    after: tuple[Any, ...] | None = None
    reached: bool = False


@dataclass(frozen=True)
class Batch:
    read: int  # rows of the window (removable or not)
    removed: int


def remove_batch(session: Session, rule: Rule, now: datetime, days: int, limit: int,
                 cursor: Cursor | None = None) -> Batch:
    """Read the next ``limit`` rows of ``rule`` dated more than ``days`` before ``now`` after
    ``cursor`` (from the oldest without one), delete (or rewrite) the removable ones among
    them, and move ``cursor`` past them."""
    cursor = cursor if cursor is not None else Cursor()
    table = rule.table
    keys = list(table.primary_key.columns)
    order = [rule.age, *keys]
    scope: list[ColumnElement[bool]] = [rule.age < now - timedelta(days=days)]
    if rule.indexed is not None:
        scope.append(rule.indexed())
    if cursor.after is not None:
        # The age alone bounds the index scan; the row comparison breaks ties by key.
        scope += [rule.age >= cursor.after[0], tuple_(*order) > cursor.after]
    columns = [*keys, *[c for c in rule.read if c not in keys]] if rule.rewrite else keys
    if rule.needed is None and rule.removable in (None, rule.indexed):
        # Every row of the window is removable: one statement reads and locks it.
        rows = session.execute(_locked(session, select(
            *order, *[c for c in columns if c not in order]).where(*scope).order_by(*order)
            .limit(limit))).all()
        if rows:
            cursor.after = tuple(rows[-1])[:len(order)]
            _remove(session, rule, keys, rows, now)
        return Batch(len(rows), len(rows))
    window = session.execute(select(*order).where(*scope).order_by(*order).limit(limit)
                             .execution_options(**PLANNED_EACH_RUN)).all()
    if not window:
        return Batch(0, 0)
    last = tuple(window[-1])
    cursor.after = last
    wanted = [*scope, rule.age <= last[0], tuple_(*order) <= last]
    if rule.removable is not None:
        wanted.append(rule.removable())
    if rule.needed is not None:
        wanted.append(not_(rule.needed(now)))
    rows = session.execute(_locked(session, select(*columns).where(*wanted))).all()
    if rows:
        _remove(session, rule, keys, rows, now)
    return Batch(len(window), len(rows))


def _locked(session: Session, query: Select[Any]) -> Select[Any]:
    query = query.execution_options(**PLANNED_EACH_RUN)
    if session.get_bind().dialect.name == "postgresql":
        # Another replica's batch is skipped, never waited for (no long locks).
        query = query.with_for_update(skip_locked=True)
    return query


def _remove(session: Session, rule: Rule, keys: list[Column[Any]], rows: Sequence[Row[Any]],
            now: datetime) -> None:
    table = rule.table
    by_key = and_(*[k == bindparam(f"k_{k.name}") for k in keys])
    params = [{f"k_{k.name}": getattr(row, k.name) for k in keys} for row in rows]
    if rule.rewrite is None:
        session.execute(delete(table).where(by_key), params)
        return
    values = [dict(rule.rewrite(row, now)) for row in rows]
    names = sorted(values[0])
    statement = update(table).where(by_key).values(
        {name: bindparam(f"v_{name}") for name in names})
    session.execute(statement, [
        {**p, **{f"v_{name}": v[name] for name in names}} for p, v in zip(params, values,
                                                                        strict=True)])


class Retention:
    """One round over every configured kind: a batch each, in its own transaction."""

    def __init__(self, transactions: Transactions, service: str, rules: Sequence[Configured],
                 batch: int = DEFAULT_BATCH, busy_percent: int = 100) -> None:
        self.transactions = transactions
        self.service = service
        self.rules = [r for r in rules if r.days > 0]
        self.batch = batch
        # Seconds of rest per second a batch took (0: batches back to back).
        self.rest_ratio = (100 - busy_percent) / busy_percent
        self.last = Outcome()
        self.cursors = {r.rule.kind: Cursor() for r in self.rules}
        self._removed = meter().create_counter(
            "cjo.retention.rows", unit="1",
            description="Rows deleted (or their bodies blanked) by retention, by kind")
        self._failures = meter().create_counter(
            "cjo.retention.failures", unit="1",
            description="Retention batches that failed, by kind")

    async def run_once(self) -> bool:
        """One batch of each kind; True when some kind read a full window (its pass has more to
        read). A failing kind is logged and counted; the others go on."""
        outcome = Outcome()
        more = False
        for configured in self.rules:
            rule = configured.rule
            started = perf_counter()
            try:
                batch = await self.transactions.run(
                    lambda uow, c=configured: self._one(uow, c))  # type: ignore[misc]
            except Exception as exc:
                outcome.errors[rule.kind] = repr(exc)
                self._failures.add(1, {"service": self.service, "kind": rule.kind})
                log.warning("retention failed for a kind; the others go on", kind=rule.kind,
                            table=rule.table.name, error=repr(exc), exc_info=exc)
                await self._rest(perf_counter() - started)
                continue
            await self._rest(perf_counter() - started)
            outcome.removed[rule.kind] = batch.removed
            if batch.removed:
                self._removed.add(batch.removed, {"service": self.service, "kind": rule.kind})
            more = more or batch.read >= self.batch
        self.last = outcome
        if any(outcome.removed.values()):
            # One line per round, not per batch: a backlog drains in many rounds.
            log.info("retention round", removed={k: n for k, n in outcome.removed.items() if n})
        return more

    async def _rest(self, busy: float) -> None:
        """Leave the database to the service's other writers for a while after a batch."""
        if self.rest_ratio > 0:
            await sleep(busy * self.rest_ratio)

    def _one(self, uow: UnitOfWork, configured: Configured) -> Batch:
        now = uow.now()
        cursor = self.cursors[configured.rule.kind]
        if cursor.started is None or (cursor.reached and now - cursor.started >= PASS_INTERVAL):
            # A new pass, from the oldest row.
            cursor.started, cursor.after, cursor.reached = now, None, False
        # A copy, kept once the batch committed: a failed one leaves the cursor where it was.
        moved = Cursor(cursor.started, cursor.after)
        batch = remove_batch(uow.session, configured.rule, now, configured.days, self.batch,
                             moved)
        moved.reached = batch.read < self.batch

        def keep() -> None:
            cursor.after, cursor.reached = moved.after, moved.reached

        uow.after_commit(keep)
        return batch


class RetentionWorker(PollingWorker):
    name = "retention"

    def __init__(self, retention: Retention, poll_seconds: float = DEFAULT_POLL_SECONDS) -> None:
        super().__init__(poll_seconds)
        self.retention = retention

    async def run_once(self) -> bool:
        return await self.retention.run_once()


def shared_rules(request_log: Table, dead_letters: Table) -> list[Rule]:
    """The kinds every service has: its request log and its dead letters."""
    return [
        Rule("request_log", request_log, request_log.c.create_time, REQUEST_LOG_DAYS,
             description="answers of mutating RPCs, for request_id repeats"),
        Rule("dead_letters", dead_letters, dead_letters.c.last_failed_time, DEAD_LETTERS_DAYS,
             description="items given up on, not yet replayed"),
    ]


def retention_worker(env: Env, service: str, transactions: Transactions, request_log: Table,
                     dead_letters: Table, rules: Sequence[Rule] = ()) -> RetentionWorker:
    """The service's retention worker: the shared kinds plus ``rules``, configured from
    ``CJO_<SERVICE>_RETENTION_*``."""
    prefix = f"CJO_{service.upper()}_RETENTION_"
    configured = configure(env, service, [*shared_rules(request_log, dead_letters), *rules])
    batch = env.int(f"{prefix}BATCH", DEFAULT_BATCH, minimum=1, maximum=10_000)
    poll = env.float(f"{prefix}POLL_SECONDS", DEFAULT_POLL_SECONDS, minimum=0.01,
                     maximum=MAX_POLL_SECONDS)
    busy = env.int(f"{prefix}BUSY_PERCENT",
                   SQLITE_BUSY_PERCENT if transactions.db.is_sqlite else 100, minimum=1,
                   maximum=100)
    return RetentionWorker(Retention(transactions, service, configured, batch, busy), poll)
