"""The decision log: bulk insert of a batch's decisions, their replays, the contact counts
that limits check, and exposures.

The log's JSON columns are encoded here with msgspec rather than by SQLAlchemy's JSON type
(the standard library's encoder): the same JSON text, read back by the same JSON type, in about
a fifth of the time, and a part shared by a batch's decisions (the context, an action's
contents) is encoded once per batch as a :func:`fragment` and copied into each row as it is.
Encoding the log was the largest single cost of a BatchDecide (issue 14). Its times are bound
likewise: a batch's decisions share one or two times, converted once per batch for the dialect
(the column type's own bind processor, called for every value, cost a tenth of the insert)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import (
    JSON,
    Column,
    MetaData,
    RowMapping,
    String,
    Table,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator

from cjo_decisioning.adapters.tables import EXPOSED, PENDING
from cjo_decisioning.adapters.tables import decisions as _d
from cjo_platform.db import UtcDateTime, one_of, pg_array
from cjo_platform.db.bulk import bulk_insert
from cjo_platform.db.probes import pg_by_keys

# Everything but what only learning reads (features, leases).
_COLUMNS = (_d.c.decision_id, _d.c.decision_point, _d.c.profile_id, _d.c.action,
            _d.c.pick_probability, _d.c.control, _d.c.request_id, _d.c.decide_time,
            _d.c.candidates, _d.c.ineligible, _d.c.context, _d.c.outcome, _d.c.expose_time,
            _d.c.reward_deadline, _d.c.reward_time)


class _Encoded(TypeDecorator[str]):
    """A JSON column whose values arrive already encoded (JSON text): bound as they are. The
    database column is the log's JSON column; only the insert below uses this type."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


class _Bound(TypeDecorator[Any]):
    """A time column whose values arrive already bound for the dialect (by the column's own
    bind processor, see :func:`insert`): bound as they are. Only the insert below uses it."""

    impl = UtcDateTime
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


def _insert_type(column: Column[Any]) -> Any:
    if isinstance(column.type, JSON):
        return _Encoded()
    if isinstance(column.type, UtcDateTime):
        return _Bound()
    return column.type


# The log table as the insert writes it: the same table, its JSON columns taking JSON text and
# its times their bound values.
_encoded_table = Table(
    _d.name, MetaData(),
    *(Column(c.name, _insert_type(c), key=c.key, primary_key=c.primary_key,
             nullable=c.nullable) for c in _d.columns),
    schema=_d.schema)
_JSON_COLUMNS = tuple(c.key for c in _d.columns if isinstance(c.type, JSON))
_TIME_COLUMNS = tuple(c for c in _d.columns if isinstance(c.type, UtcDateTime))
_encoder = msgspec.json.Encoder()


def fragment(value: Any) -> Any:
    """``value`` encoded once, to be placed (any number of times) inside the JSON columns of
    the rows given to :func:`insert`: it is written there as the JSON of ``value``."""
    return msgspec.Raw(_encoder.encode(value))


def insert(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """A batch's decisions in one bulk insert (COPY on PostgreSQL). Each row gives every
    column; its JSON columns hold JSON values (lists, dicts, strings, numbers, booleans, None)
    and :func:`fragment` s."""
    encode = _encoder.encode
    dialect = session.get_bind().dialect
    # Each time column's bound values, by time: a batch's rows share a few times (and None).
    times = [(c.key, c.type.dialect_impl(dialect).bind_processor(dialect) or _same,
              dict[Any, Any]({None: None})) for c in _TIME_COLUMNS]

    def bound(row: Mapping[str, Any]) -> dict[str, Any]:
        out = {**row, **{key: encode(row[key]).decode() for key in _JSON_COLUMNS}}
        for key, process, seen in times:
            value = row[key]
            found = seen.get(value, seen)
            if found is seen:
                found = seen[value] = process(value)
            out[key] = found
        return out

    bulk_insert(session, _encoded_table, [bound(row) for row in rows])


def _same(value: Any) -> Any:
    return value


def replays(session: Session, workspace_id: str, point: str,
            request_ids: Collection[str]) -> dict[str, RowMapping]:
    """The decisions already made at ``point`` for these request ids (ux_decisions_request;
    on PostgreSQL probed per id, see :data:`_PG_REPLAYS`)."""
    if not request_ids:
        return {}
    wanted = sorted(set(request_ids))
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_PG_REPLAYS, {"workspace_id": workspace_id, "point": point,
                                             "keys": pg_array(wanted)}).mappings()
    else:
        rows = session.execute(select(*_COLUMNS).where(
            _d.c.workspace_id == workspace_id, _d.c.decision_point == point,
            # Repeats the partial index's own condition, without which neither database may
            # use ux_decisions_request (SQLite then read every decision of the point on each
            # call).
            _d.c.request_id != "", _d.c.request_id.in_(wanted))).mappings()
    found: dict[str, RowMapping] = {}
    for row in rows:
        found.setdefault(row["request_id"], row)
    return found


def contacts(session: Session, workspace_id: str, profile_ids: Collection[str],
             actions: Collection[str], since: datetime) -> list[tuple[str, str, datetime]]:
    """(profile, action, time) of the contacts with ``actions`` of these people since
    ``since``: the exposures (at their expose time) and the decisions still waiting for theirs
    (at their decision time: a REPORTED point's send is on its way), one query for a whole
    batch (ix_decisions_person; on PostgreSQL probed per person, see :data:`_PG_CONTACTS`)."""
    if not profile_ids or not actions:
        return []
    people, wanted = sorted(set(profile_ids)), sorted(set(actions))
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_PG_CONTACTS, {
            "workspace_id": workspace_id, "keys": pg_array(people),
            "actions": pg_array(wanted), "since": since})
    else:
        rows = session.execute(select(
            _d.c.profile_id, _d.c.action, func.coalesce(_d.c.expose_time, _d.c.decide_time)
            .label("contact_time")).where(
            _d.c.workspace_id == workspace_id, _d.c.profile_id.in_(people),
            _d.c.action.in_(wanted),
            or_(_d.c.expose_time >= since,
                and_(_d.c.outcome == PENDING, _d.c.decide_time >= since))))
    return [(row.profile_id, row.action, row.contact_time) for row in rows]


def get(session: Session, workspace_id: str, decision_id: str) -> RowMapping | None:
    return session.execute(select(*_COLUMNS).where(
        _d.c.workspace_id == workspace_id, _d.c.decision_id == decision_id)).mappings().first()


def for_exposure(session: Session, workspace_id: str,
                 decision_ids: Collection[str]) -> dict[str, RowMapping]:
    """The decisions of ``decision_ids``, locked until the exposure commits (on PostgreSQL
    probed per id, locked as probed in id order, see :data:`_PG_FOR_EXPOSURE`)."""
    if not decision_ids:
        return {}
    wanted = sorted(set(decision_ids))
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_PG_FOR_EXPOSURE, {"workspace_id": workspace_id,
                                                  "keys": pg_array(wanted)}).mappings()
    else:
        rows = session.execute(select(*_EXPOSURE_COLUMNS).where(
            _d.c.workspace_id == workspace_id,
            _d.c.decision_id.in_(wanted)).with_for_update()).mappings()
    return {row["decision_id"]: row for row in rows}


# On PostgreSQL the reads by key of a Decide call (its replays, its contacts) and of an
# exposure probe the index on (workspace_id, key) once per key (cjo_platform.db.probes), also
# for a workspace the planner's statistics do not know yet (a new tenant inside a big log, or
# a fresh database before autovacuum): with the workspace a constant, the planner rated such
# a workspace at one row and read all of it through an index's workspace prefix (the
# point's, for the replays), filtering by the keys, on every call.
_EXPOSURE_COLUMNS = (_d.c.decision_id, _d.c.decision_point, _d.c.action, _d.c.outcome,
                     _d.c.decide_time, _d.c.expose_time)
_PG_REPLAYS = pg_by_keys(
    _COLUMNS, _d.c.request_id,
    # The partial index's own condition, so ux_decisions_request is the probe's index.
    where="t.decision_point = :point AND t.request_id <> ''",
    binds=[bindparam("point", type_=String)])
_PG_CONTACTS = pg_by_keys(
    [_d.c.profile_id, _d.c.action], _d.c.profile_id,
    where=f"t.action = ANY(CAST(:actions AS text[])) AND (t.expose_time >= :since "
          f"OR (t.outcome = {PENDING} AND t.decide_time >= :since))",
    computed={"contact_time": ("coalesce(t.expose_time, t.decide_time)", _d.c.decide_time.type)},
    binds=[bindparam("since", type_=_d.c.decide_time.type)], arrays=["actions"])
_PG_FOR_EXPOSURE = pg_by_keys(_EXPOSURE_COLUMNS, _d.c.decision_id, lock=True)



def expose(session: Session, workspace_id: str, decision_id: str, expose_time: datetime,
           reward_deadline: datetime) -> bool:
    """Mark a pending decision exposed; False when it was not pending (exposed before)."""
    result = session.execute(update(_d).where(
        _d.c.workspace_id == workspace_id, _d.c.decision_id == decision_id,
        _d.c.outcome == PENDING).values(outcome=EXPOSED, expose_time=expose_time,
                                        reward_deadline=reward_deadline))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def for_people(session: Session, workspace_id: str, profile_ids: Collection[str],
               after: tuple[datetime, str] | None, limit: int) -> list[RowMapping]:
    """Up to ``limit`` decisions of ``profile_ids``, newest first (by decide time, then id),
    after the keyset cursor ``after`` (ix_decisions_person finds a person's)."""
    query = select(*_COLUMNS).where(_d.c.workspace_id == workspace_id,
                                    one_of(session, _d.c.profile_id, sorted(set(profile_ids))))
    if after is not None:
        time, decision_id = after
        query = query.where(or_(_d.c.decide_time < time,
                                and_(_d.c.decide_time == time, _d.c.decision_id < decision_id)))
    return list(session.execute(query.order_by(_d.c.decide_time.desc(), _d.c.decision_id.desc())
                                .limit(limit)).mappings())
