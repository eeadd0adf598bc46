"""Retention: rows past their kind's age are deleted (or their bulky columns blanked) in the
background, a small batch per transaction, so tables that grow with traffic (request logs,
events, inboxes, step history, message bodies, decisions) stay bounded.

A service lists its kinds as :class:`Rule` s (the table, the column that dates a row, the
condition a row must meet to be removable, and what to do: delete, or rewrite some columns);
:func:`configure` reads each kind's age from ``CJO_<SERVICE>_RETENTION_<KIND>_DAYS`` (0 keeps the
kind forever) and :class:`RetentionWorker` applies them. Retention is per environment, not per
workspace: every workspace of a deployment keeps a kind equally long.

Each batch selects at most ``batch`` primary keys of removable rows older than the cut-off (the
age column should have an index, partial on the ``removable`` condition where rows stay behind),
locks them with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, and deletes or rewrites exactly those
rows by primary key in the same short transaction. Two replicas therefore take different rows,
and a row removed twice is harmless. A rule that fails (a bug, a lock timeout) is logged and
counted, and the other rules go on; the worker tries it again next round.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, and_, bindparam, delete, select, true, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger
from cjo_platform.metrics import meter
from cjo_platform.worker import PollingWorker

log = get_logger(__name__)

DEFAULT_BATCH = 1000
DEFAULT_POLL_SECONDS = 60.0
# Shared kinds every service has (cjo_platform.service.shared_tables).
REQUEST_LOG_DAYS = 7  # a client retries within minutes; a week covers any sane retry policy
DEAD_LETTERS_DAYS = 0  # every letter is unresolved (a replay removes it): kept until replayed


@dataclass(frozen=True)
class Rule:
    """One kind of data and how long it is kept.

    ``removable`` builds the condition a row must meet besides its age (what is still needed is
    never touched: pending rows, active enrollments, open windows). ``rewrite`` turns a row (its
    primary key and ``read`` columns) and the time now into the values that replace its bulky
    columns: then the row is kept, and ``removable`` must exclude rows already rewritten."""

    kind: str
    table: Table
    age: Column[Any]
    default_days: int
    removable: Callable[[], ColumnElement[bool]] | None = None
    rewrite: Callable[[Row[Any], datetime], Mapping[str, Any]] | None = None
    read: Sequence[Column[Any]] = ()
    description: str = ""


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


def remove_batch(session: Session, rule: Rule, now: datetime, days: int, limit: int) -> int:
    """Delete (or rewrite) up to ``limit`` removable rows of ``rule`` dated more than ``days``
    before ``now``; how many."""
    cutoff = now - timedelta(days=days)
    table = rule.table
    keys = list(table.primary_key.columns)
    condition = and_(rule.age < cutoff, rule.removable() if rule.removable else true())
    columns = [*keys, *[c for c in rule.read if c not in keys]] if rule.rewrite else keys
    query = select(*columns).where(condition).order_by(rule.age).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        # Another replica's batch is skipped, never waited for (no long locks).
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    if not rows:
        return 0
    by_key = and_(*[k == bindparam(f"k_{k.name}") for k in keys])
    params = [{f"k_{k.name}": getattr(row, k.name) for k in keys} for row in rows]
    if rule.rewrite is None:
        session.execute(delete(table).where(by_key), params)
    else:
        values = [dict(rule.rewrite(row, now)) for row in rows]
        names = sorted(values[0])
        statement = update(table).where(by_key).values(
            {name: bindparam(f"v_{name}") for name in names})
        session.execute(statement, [
            {**p, **{f"v_{name}": v[name] for name in names}} for p, v in zip(params, values,
                                                                            strict=True)])
    return len(rows)


class Retention:
    """One round over every configured kind: a batch each, in its own transaction."""

    def __init__(self, transactions: Transactions, service: str, rules: Sequence[Configured],
                 batch: int = DEFAULT_BATCH) -> None:
        self.transactions = transactions
        self.service = service
        self.rules = [r for r in rules if r.days > 0]
        self.batch = batch
        self.last = Outcome()
        self._removed = meter().create_counter(
            "cjo.retention.rows", unit="1",
            description="Rows deleted (or their bodies blanked) by retention, by kind")
        self._failures = meter().create_counter(
            "cjo.retention.failures", unit="1",
            description="Retention batches that failed, by kind")

    async def run_once(self) -> bool:
        """One batch of each kind; True when some kind had a full batch (more may be waiting).
        A failing kind is logged and counted; the others go on."""
        outcome = Outcome()
        more = False
        for configured in self.rules:
            rule = configured.rule
            try:
                removed = await self.transactions.run(
                    lambda uow, c=configured: self._one(uow, c))  # type: ignore[misc]
            except Exception as exc:
                outcome.errors[rule.kind] = repr(exc)
                self._failures.add(1, {"service": self.service, "kind": rule.kind})
                log.warning("retention failed for a kind; the others go on", kind=rule.kind,
                            table=rule.table.name, error=repr(exc), exc_info=exc)
                continue
            outcome.removed[rule.kind] = removed
            if removed:
                self._removed.add(removed, {"service": self.service, "kind": rule.kind})
            more = more or removed >= self.batch
        self.last = outcome
        if any(outcome.removed.values()):
            # One line per round, not per batch: a backlog drains in many rounds.
            log.info("retention round", removed={k: n for k, n in outcome.removed.items() if n})
        return more

    def _one(self, uow: UnitOfWork, configured: Configured) -> int:
        return remove_batch(uow.session, configured.rule, uow.now(), configured.days,
                            self.batch)


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
    poll = env.float(f"{prefix}POLL_SECONDS", DEFAULT_POLL_SECONDS, minimum=0.01)
    return RetentionWorker(Retention(transactions, service, configured, batch), poll)
