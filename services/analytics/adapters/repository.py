"""Fact storage: deduplicated bulk inserts and the report queries. Counting happens in SQL;
only attribution loads rows (the conversions of a window and their profiles' touchpoints).

Reports count people, not profile ids: a fact's person is the survivor its profile was merged
into (``profile_aliases``, kept flat as merges arrive), else its own profile id, resolved when
the report reads, so facts recorded before a merge move with it."""

from __future__ import annotations

import functools
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    FromClause,
    String,
    Table,
    and_,
    bindparam,
    case,
    distinct,
    func,
    literal,
    literal_column,
    select,
    text,
    union,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable, TextClause

from cjo_analytics.adapters.tables import facts, messages, profile_aliases
from cjo_analytics.domain.attribution import Conversion, TouchFact
from cjo_analytics.domain.experiments import ExperimentArm, ExperimentSummary
from cjo_analytics.domain.facts import (
    COMPLETING_EXITS,
    CONVERSIONS,
    FAILING_EXITS,
    HOLDING_EXITS,
    MERGED_EXITS,
    TOUCHES,
    Fact,
    FactCount,
    FactType,
)
from cjo_analytics.domain.reports import (
    Bucket,
    Granularity,
    NodeFunnel,
    NodeOutcome,
    OutcomeRow,
    Outcomes,
    VersionFunnel,
    Window,
    epoch_hour,
)
from cjo_analytics.domain.stats import ArmCounts
from cjo_platform.db import (
    insert_on_conflict,
    keys_param,
    one_of,
    one_of_keys,
    pg_array,
    upsert,
)
from cjo_platform.db.planning import PLANNED_EACH_RUN
from cjo_platform.db.probes import pg_probes, pg_text

_CONVERSION_TYPES = [t.value for t in CONVERSIONS]
_TOUCH_TYPES = [t.value for t in TOUCHES]
_MESSAGE_OUTCOMES = {
    FactType.MESSAGE_SENT: "sent", FactType.MESSAGE_DELIVERED: "delivered",
    FactType.MESSAGE_OPENED: "opened", FactType.MESSAGE_CLICKED: "clicked",
    FactType.MESSAGE_BOUNCED: "bounced", FactType.MESSAGE_UNSUBSCRIBED: "unsubscribed",
}


def _or_fact(column: ColumnElement[str]) -> ColumnElement[str]:
    """The column, or the fact id where it is empty (so an empty id never merges facts). The ''
    is written into the SQL: SQLite sorts a window partitioned by an expression with a bound
    parameter once per window function instead of once."""
    return func.coalesce(func.nullif(column, literal_column("''")), facts.c.fact_id)


def record_facts(session: Session, workspace_id: str, batch: Sequence[Fact],
                 now: datetime) -> set[str]:
    """Insert facts not yet recorded and fold the new ones into their messages' rows; returns
    the ids that were new.

    On PostgreSQL the batch is one statement (:data:`_INSERT_NEW_FACTS`): the facts as one
    JSON parameter, inserted unless stored already, the new ids returned. On SQLite the ids
    stored already are read first (one statement with the ids as one parameter) and the new
    facts go in with the driver's executemany (:data:`_INSERT_FACTS_SQLITE`, rows as tuples
    made straight from the facts); a concurrent batch that inserts one of the same ids first
    makes the insert fail on the primary key, the unit of work runs this again, and the fact
    is read as stored. Either way no multi-row INSERT whose thousands of parameters SQLAlchemy
    and the driver would process one by one. (SQLite's own INSERT ... SELECT FROM json_each
    ... ON CONFLICT DO NOTHING RETURNING, the PostgreSQL form, measured ~4x the CPU of the
    whole use-case: ``->>`` parses each fact's JSON again for each of its 25 columns.)"""
    firsts: dict[str, Fact] = {}  # the first fact of each id, in batch order
    for f in batch:
        firsts.setdefault(f.fact_id, f)
    if session.get_bind().dialect.name == "postgresql":
        new = set(session.execute(_INSERT_NEW_FACTS, {"rows": json.dumps(
            _fact_rows(workspace_id, firsts.values(), now, _iso), ensure_ascii=False,
            check_circular=False)}).scalars())
    else:
        stored = _stored_ids(session, workspace_id, set(firsts))
        inserted = [f for fact_id, f in firsts.items() if fact_id not in stored]
        _insert_facts_sqlite(session, workspace_id, inserted, now)
        new = {f.fact_id for f in inserted}
    recorded = [f for f in firsts.values() if f.fact_id in new]
    _fold_into_messages(session, workspace_id, recorded)
    merges = [(f.profile_id, f.survivor_profile_id) for f in recorded
              if f.type is FactType.PROFILE_MERGED]
    if merges:
        record_merges(session, workspace_id, merges)
    return new


# PostgreSQL: a batch of facts in ONE round trip. The rows travel as one JSON array (encoded in
# C by json.dumps), ``jsonb_populate_recordset`` turns it into rows of the table's own type, and
# ON CONFLICT DO NOTHING RETURNING both skips the facts stored already and names the new ones.
# The text never changes, so psycopg parses it once and prepares it. It replaced a SELECT of
# the stored ids followed by COPY, or below COPY's threshold one pipelined INSERT per fact:
# a RecordFacts call of a few facts (what the senders' forwarders send at a steady hundred
# events per second) paid ~1.6 ms CPU in the use-case, most of it the driver's work for those
# round trips. (``insert_ignore``'s unnest form measured no better for these 25-column rows:
# psycopg inspects each of the 25 arrays to pick its type.) A concurrent batch inserting one of
# the same ids waits for this one to commit, then skips it: each fact counts once. Times are
# ISO 8601 with their offset, floats Python's shortest round-trip text, read back exactly.
_INSERT_NEW_FACTS = text(
    "INSERT INTO facts SELECT * FROM jsonb_populate_recordset(NULL::facts, CAST(:rows AS jsonb)) "
    "ON CONFLICT DO NOTHING RETURNING fact_id").columns(facts.c.fact_id)

# The facts' columns in the order of _fact_values.
_FACT_COLUMNS = ("workspace_id", "fact_id", "type", "profile_id", "journey_id",
                 "enrollment_id", "message_id", "occur_time", "record_time", "journey_version",
                 "node_id", "channel", "content_key", "variant", "experiment_id", "arm",
                 "control", "arm_weight", "revenue", "currency", "exit_reason", "occur_hour",
                 "conversion_deadline", "visit_sequence", "source_event_id")

# SQLite: the new facts through the driver's executemany, each row a tuple made straight from
# the fact (times as the text SQLAlchemy's DATETIME binds, made by the column's own bind
# processor once per distinct moment; no other column of facts has a bind processor on SQLite:
# strings, integers, floats and booleans go to the driver as they are). ``bulk_insert`` would
# build a dict per fact and then transpose and re-bind every value in Python: most of the
# use-case's CPU for a batch of facts.
_INSERT_FACTS_SQLITE = (f"INSERT INTO facts ({', '.join(_FACT_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_FACT_COLUMNS))})")


def _insert_facts_sqlite(session: Session, workspace_id: str, new: Sequence[Fact],
                         now: datetime) -> None:
    if not new:
        return
    time = _sqlite_time(session.get_bind().dialect)
    encoded: dict[datetime, str] = {}

    def as_text(moment: datetime | None) -> str | None:
        # A batch's record time is shared, and facts of one call often share their moment.
        if moment is None:
            return None
        found = encoded.get(moment)
        if found is None:
            found = encoded[moment] = time(moment)
        return found

    session.connection().exec_driver_sql(_INSERT_FACTS_SQLITE,
                                         _fact_values(workspace_id, new, now, as_text))


@functools.cache
def _sqlite_time(dialect: Any) -> Callable[[datetime], str]:
    """What an INSERT binds for a UtcDateTime column on this (SQLite) dialect."""
    processor = facts.c.occur_time.type.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    return cast(Callable[[datetime], str], processor)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _fact_values(workspace_id: str, recorded: Iterable[Fact], now: datetime,
                 time: Callable[[datetime | None], Any]) -> list[tuple[Any, ...]]:
    """The facts as rows of ``facts``, values in _FACT_COLUMNS order; ``time`` encodes the
    times."""
    recorded_at = time(now)
    return [
        (workspace_id, f.fact_id, f.type.value, f.profile_id, f.journey_id, f.enrollment_id,
         f.message_id, time(f.occur_time), recorded_at, f.journey_version, f.node_id,
         f.channel, f.content_key, f.variant, f.experiment_id, f.arm, f.control,
         f.arm_weight, f.revenue, f.currency, f.exit_reason, epoch_hour(f.occur_time),
         time(f.conversion_deadline), f.visit_sequence, f.source_event_id)
        for f in recorded
    ]


def _fact_rows(workspace_id: str, recorded: Iterable[Fact], now: datetime,
               time: Callable[[datetime | None], Any]) -> list[dict[str, Any]]:
    """The facts as rows of ``facts``, every column given by name."""
    return [dict(zip(_FACT_COLUMNS, values, strict=True))
            for values in _fact_values(workspace_id, recorded, now, time)]


# The stored ids among a batch's: the ids bound as one parameter (an array on PostgreSQL, a
# JSON array on SQLite), so the statement is built and compiled once for any batch, and each id
# is one primary-key probe.
_STORED_IDS = {dialect: select(facts.c.fact_id).where(
    facts.c.workspace_id == bindparam("w"), one_of_keys(dialect, facts.c.fact_id, "ids"))
    for dialect in ("postgresql", "sqlite")}
_ID_CHUNK = 1000


def _stored_ids(session: Session, workspace_id: str, ids: set[str]) -> set[str]:
    dialect = session.get_bind().dialect.name
    statement = _STORED_IDS[dialect]
    wanted = sorted(ids)
    stored: set[str] = set()
    for start in range(0, len(wanted), _ID_CHUNK):
        some = wanted[start:start + _ID_CHUNK]
        stored.update(session.execute(statement, {
            "w": workspace_id,
            "ids": keys_param(dialect, some)}).scalars())
    return stored


def record_merges(session: Session, workspace_id: str,
                  merges: Sequence[tuple[str, str]]) -> None:
    """Fold merges (merged profile id, survivor id), in order, into the flat alias table: the
    merged id (and every id that pointed at it) now points at the survivor's own survivor. Any
    arrival order ends in the same table; a merge that would close a cycle is ignored."""
    if session.get_bind().dialect.name == "postgresql":
        # Two batches folding a chain (a -> b, b -> c) at once would each miss the other's row.
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || :key))"),
                        {"key": f"profile_aliases:{workspace_id}"})
    a = profile_aliases.c
    for merged, survivor in merges:
        final = session.execute(
            select(a.survivor_profile_id).where(a.workspace_id == workspace_id,
                                                a.merged_profile_id == survivor)
        ).scalar_one_or_none() or survivor
        if final == merged:
            continue  # identity merges a profile away once; a cycle would lose the person
        upsert(session, profile_aliases, [{"workspace_id": workspace_id,
                                           "merged_profile_id": merged,
                                           "survivor_profile_id": final}],
               lambda excluded: {"survivor_profile_id": excluded.survivor_profile_id})
        session.execute(update(profile_aliases)
                        .where(a.workspace_id == workspace_id, a.survivor_profile_id == merged)
                        .values(survivor_profile_id=final))


def _people(table: Table | FromClause) -> tuple[Table | FromClause, ColumnElement[str]]:
    """``table`` (facts or an alias of it) and the person of each of its rows: the survivor its
    profile was merged into, else the profile itself.

    The survivor is a correlated lookup by primary key, one index probe per row, rather than an
    outer join: without statistics (a fresh table) PostgreSQL planned the join as a scan of
    every alias of the workspace per fact (24 s for 24,000 exposures and 2,000 merges)."""
    alias = profile_aliases.alias()
    survivor = (select(alias.c.survivor_profile_id)
                .where(alias.c.workspace_id == table.c.workspace_id,
                       alias.c.merged_profile_id == table.c.profile_id)
                .scalar_subquery())
    return table, func.coalesce(survivor, table.c.profile_id)


_MESSAGE_ATTRIBUTES = ("journey_id", "channel", "content_key", "variant")
_OUTCOME_TIMES = {t: f"{name}_time" for t, name in _MESSAGE_OUTCOMES.items()}


def _fold_into_messages(session: Session, workspace_id: str, new: Iterable[Fact]) -> None:
    """Keep one row per message: each attribute from whichever fact carries it (the greatest
    when facts disagree, as a GROUP BY with max() would pick), each outcome at its first time."""
    rows: dict[str, dict[str, Any]] = {}
    for f in new:
        if f.type not in _OUTCOME_TIMES and f.type is not FactType.MESSAGE_REQUESTED:
            continue
        key = f.message_id or f.fact_id
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"workspace_id": workspace_id, "message_key": key,
                               "journey_id": "", "channel": 0, "content_key": "", "variant": "",
                               **dict.fromkeys(_OUTCOME_TIMES.values())}
        for name in _MESSAGE_ATTRIBUTES:
            row[name] = max(row[name], getattr(f, name))
        if (column := _OUTCOME_TIMES.get(f.type)) is not None:
            row[column] = min(row[column] or f.occur_time, f.occur_time)

    if rows:
        # Primary-key order: concurrent folds of overlapping messages lock them alike.
        insert_on_conflict(session, messages,
                           sorted(rows.values(), key=itemgetter("message_key")),
                           _fold_statement(session.get_bind().dialect.name))


@functools.cache
def _fold_statement(dialect: str) -> Any:
    """The upsert of message rows, built once per dialect (not per call: building it and its
    cache key cost more than running it for a few rows)."""
    # Strings compare by code point, as max() above and SQLite do: PostgreSQL would otherwise
    # compare in the database's collation, and a language collation can order two variant
    # names the other way.
    binary = dialect == "postgresql"

    def by_code_point(column: Any) -> Any:
        return column.collate("C") if binary and isinstance(column.type, String) else column

    insert = postgresql.insert if binary else sqlite.insert
    statement = insert(messages)
    excluded, stored = statement.excluded, messages.c
    greatest = {name: case((by_code_point(excluded[name]) > by_code_point(stored[name]),
                            excluded[name]),
                           else_=stored[name]) for name in _MESSAGE_ATTRIBUTES}
    earliest = {name: case((stored[name].is_(None), excluded[name]),
                           (excluded[name] < stored[name], excluded[name]),
                           else_=stored[name]) for name in _OUTCOME_TIMES.values()}
    return statement.on_conflict_do_update(
        index_elements=[c.name for c in messages.primary_key.columns],
        set_=greatest | earliest)


def journey_counts(session: Session, workspace_id: str, journey_id: str) -> list[FactCount]:
    joined, person = _people(facts)
    rows = session.execute(
        select(facts.c.type, func.count(), func.count(distinct(person)))
        .select_from(joined)
        .where(facts.c.workspace_id == workspace_id, facts.c.journey_id == journey_id)
        .group_by(facts.c.type)
    ).all()
    order = list(FactType)
    counts = [FactCount(FactType(t), int(n), int(p)) for t, n, p in rows]
    return sorted(counts, key=lambda c: order.index(c.type))


def journey_exists(session: Session, workspace_id: str, journey_id: str) -> bool:
    return session.execute(
        select(literal(1)).where(facts.c.workspace_id == workspace_id,
                                 facts.c.journey_id == journey_id).limit(1)
    ).first() is not None


def journey_funnel(session: Session, workspace_id: str, journey_id: str, version: int,
                   granularity: Granularity | None, window: Window | None
                   ) -> list[VersionFunnel]:
    """Per version: entries, conversions (the journey's own goal: GOAL_REACHED), revenue,
    exits, the node funnel and the series."""
    scope = [facts.c.workspace_id == workspace_id, facts.c.journey_id == journey_id]
    if version:
        scope.append(facts.c.journey_version == version)
    goal = FactType.GOAL_REACHED.value
    is_conversion = facts.c.type == goal
    enrollment = _or_fact(facts.c.enrollment_id)
    exited_type = FactType.JOURNEY_EXITED.value
    funnels: dict[int, VersionFunnel] = {}

    def funnel(v: int) -> VersionFunnel:
        return funnels.setdefault(v, VersionFunnel(v))

    joined, person = _people(facts)
    totals = session.execute(
        select(facts.c.journey_version,
               func.count(distinct(case((facts.c.type == FactType.JOURNEY_ENTERED.value,
                                         person)))),
               func.count(distinct(case((is_conversion, person)))),
               func.coalesce(func.sum(case((is_conversion, facts.c.revenue), else_=0.0)), 0.0),
               func.count(distinct(case((facts.c.type == exited_type, enrollment)))))
        .select_from(joined)
        .where(*scope, facts.c.type.in_([FactType.JOURNEY_ENTERED.value, exited_type,
                                         goal]))
        .group_by(facts.c.journey_version)
    ).all()
    for v, entered, converted, revenue, exited in totals:
        f = funnel(int(v))
        f.entered_profiles, f.converted_profiles = int(entered), int(converted)
        f.revenue, f.exited = float(revenue), int(exited)

    for v, node in _node_funnels(session, scope):
        funnel(v).nodes.append(node)
    for f in funnels.values():
        f.nodes.sort(key=lambda n: (-n.entered, n.node_id))

    if granularity is not None and window is not None:
        bucket = (facts.c.occur_hour // int(granularity)).label("bucket")
        rows = session.execute(
            select(bucket, facts.c.journey_version,
                   func.count(distinct(case((facts.c.type == FactType.JOURNEY_ENTERED.value,
                                             person)))),
                   func.count(case((is_conversion, facts.c.fact_id))),
                   func.coalesce(func.sum(case((is_conversion, facts.c.revenue), else_=0.0)),
                                 0.0),
                   func.count(distinct(case((facts.c.type == exited_type, enrollment)))))
            .select_from(joined)
            .where(*scope, facts.c.occur_time >= window.start, facts.c.occur_time < window.end,
                   facts.c.type.in_([FactType.JOURNEY_ENTERED.value, exited_type,
                                     goal]))
            .group_by(bucket, facts.c.journey_version)
        ).all()
        for key, v, entered, conversions, revenue, exited in rows:
            funnel(int(v)).series.append(Bucket(int(key), int(entered), int(conversions),
                                                float(revenue), int(exited)))
    return [funnels[v] for v in sorted(funnels)]


def _node_funnels(session: Session, scope: list[ColumnElement[bool]]
                  ) -> list[tuple[int, NodeFunnel]]:
    """Per (version, node): the enrollments that entered it, by their NodeOutcome there. Each
    (enrollment, node) pair of an arrival, a failure or an exit at the node is classified
    against the enrollment's exit and its latest numbered arrival (its position). One sort per
    enrollment (window functions) instead of joins, which SQLite would run per row."""
    enrollment = _or_fact(facts.c.enrollment_id)
    visited, failed = FactType.NODE_VISITED.value, FactType.NODE_FAILED.value
    is_exit = facts.c.type == FactType.JOURNEY_EXITED.value
    # No bound parameter in the window (see _or_fact): its constants are written into the SQL.
    zero: ColumnElement[int] = literal_column("0")
    one: ColumnElement[int] = literal_column("1")
    numbered = and_(facts.c.type == literal(visited, literal_execute=True),
                    facts.c.visit_sequence > zero)
    exit_outcome = case((facts.c.exit_reason.in_(COMPLETING_EXITS), int(NodeOutcome.COMPLETED)),
                        (facts.c.exit_reason.in_(FAILING_EXITS), int(NodeOutcome.FAILED)),
                        (facts.c.exit_reason.in_(HOLDING_EXITS), int(NodeOutcome.HELD_OUT)),
                        (facts.c.exit_reason.in_(MERGED_EXITS), int(NodeOutcome.MERGED)),
                        else_=int(NodeOutcome.DROPPED))
    # One window for all four (one sort): the enrollment's facts, latest numbered arrival first.
    whole: dict[str, Any] = {
        "partition_by": enrollment, "rows": (None, None),
        "order_by": (case((numbered, zero), else_=one), facts.c.visit_sequence.desc(),
                     facts.c.fact_id.desc())}
    rows = (
        select(facts.c.journey_version.label("version"), enrollment.label("enrollment"),
               facts.c.node_id.label("node_id"),
               case((facts.c.type == failed, 1), else_=0).label("failed"),
               func.max(case((is_exit, 1), else_=0)).over(**whole).label("ended"),
               func.max(case((is_exit, facts.c.node_id))).over(**whole).label("exit_node"),
               func.max(case((is_exit, exit_outcome))).over(**whole).label("exit_outcome"),
               # The node of the latest numbered arrival (NULL when none is numbered).
               func.first_value(case((numbered, facts.c.node_id))).over(**whole)
               .label("position"))
        .where(*scope, facts.c.type.in_([visited, failed, FactType.JOURNEY_EXITED.value]))
        .subquery()
    )
    # Old exits name no node: they count in the version's `exited`, at no node.
    pairs = (
        select(rows.c.version, rows.c.node_id, func.max(rows.c.failed).label("failed"),
               func.max(rows.c.ended).label("ended"),
               func.max(rows.c.exit_node).label("exit_node"),
               func.max(rows.c.exit_outcome).label("exit_outcome"),
               func.max(rows.c.position).label("position"))
        .where(rows.c.node_id != "")
        .group_by(rows.c.version, rows.c.enrollment, rows.c.node_id)
        .subquery()
    )
    outcome = case(
        (pairs.c.exit_node == pairs.c.node_id, pairs.c.exit_outcome),
        (and_(pairs.c.ended == 0, pairs.c.position == pairs.c.node_id),
         int(NodeOutcome.IN_PROGRESS)),
        (pairs.c.failed == 1, int(NodeOutcome.FAILED)),
        else_=int(NodeOutcome.COMPLETED))

    def counted(value: NodeOutcome) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((outcome == int(value), 1), else_=0)), 0)

    # A merged enrollment is not counted where it ended: its person carries on in the
    # surviving enrollment.
    counts = session.execute(
        select(pairs.c.version, pairs.c.node_id,
               *(counted(value) for value in NodeOutcome if value is not NodeOutcome.MERGED))
        .where(outcome != int(NodeOutcome.MERGED))
        .group_by(pairs.c.version, pairs.c.node_id)
    ).all()
    return [(int(v), NodeFunnel(node, entered=sum(map(int, by_outcome)),
                                in_progress=int(in_progress), completed=int(completed),
                                failed=int(failed_count), dropped=int(dropped),
                                held_out=int(held_out)))
            for v, node, *by_outcome in counts
            for in_progress, completed, failed_count, dropped, held_out in [by_outcome]]


def channel_outcomes(session: Session, workspace_id: str, journey_id: str,
                     window: Window | None) -> list[OutcomeRow]:
    """Unique messages per outcome, grouped by channel, content item and variant. A message
    counts for an outcome when the outcome FIRST happened inside the window."""
    m = messages.c

    def happened(column: str) -> ColumnElement[int]:
        at = m[column]
        inside = at.is_not(None) if window is None else and_(at >= window.start,
                                                              at < window.end)
        return func.coalesce(func.sum(case((inside, 1), else_=0)), 0)

    outcomes = list(_MESSAGE_OUTCOMES.values())
    query = (
        select(m.channel, m.content_key, m.variant,
               *(happened(f"{name}_time") for name in outcomes))
        .where(m.workspace_id == workspace_id)
        .group_by(m.channel, m.content_key, m.variant)
    )
    if journey_id:
        query = query.where(m.journey_id == journey_id)
    result = []
    for channel, content_key, variant, *counts in session.execute(query).all():
        if any(counts):
            result.append(OutcomeRow(int(channel), content_key, variant,
                                     Outcomes(**dict(zip(outcomes, map(int, counts),
                                                         strict=True)))))
    return result


@dataclass(frozen=True)
class ExperimentData:
    arms: list[ArmCounts]
    weights: dict[str, float]
    currencies: set[str]  # of the counted conversions (at least two when they mix)


def experiment(session: Session, workspace_id: str, experiment_id: str) -> ExperimentData:
    """Per arm: people exposed (each in the arm of their first exposure under any of their
    profile ids, ties by fact id), those with a conversion at or after that exposure (and not
    after its conversion deadline, when it has one) under any of their ids, and that revenue.
    A conversion counts once per (person, source event): a purchase that is a journey's goal
    and a workspace conversion is one conversion, at its earliest fact."""
    in_experiment = [facts.c.workspace_id == workspace_id,
                     facts.c.experiment_id == experiment_id]
    joined, person = _people(facts)
    ranked = (
        select(person.label("person"), facts.c.arm, facts.c.control, facts.c.occur_time,
               facts.c.conversion_deadline,
               func.row_number().over(partition_by=person,
                                      order_by=(facts.c.occur_time, facts.c.fact_id)
                                      ).label("rn"))
        .select_from(joined)
        .where(*in_experiment)
        .subquery()
    )
    exposed: dict[str, tuple[str, datetime, datetime | None]] = {}
    exposures: dict[str, int] = defaultdict(int)
    controls: dict[str, bool] = defaultdict(bool)
    for who, arm, control, start, deadline in session.execute(
        select(ranked.c.person, ranked.c.arm, ranked.c.control, ranked.c.occur_time,
               ranked.c.conversion_deadline).where(ranked.c.rn == 1)
    ).all():
        exposed[who] = (arm, start, deadline)
        exposures[arm] += 1
        controls[arm] |= bool(control)
    by_person: dict[str, float] = defaultdict(float)
    currencies: set[str] = set()
    for who, when, revenue, currency in _conversions_of(session, workspace_id, exposed):
        arm, start, deadline = exposed[who]
        if when >= start and (deadline is None or when <= deadline):
            by_person[who] += revenue
            if currency:
                currencies.add(currency)
    revenues: dict[str, list[float]] = defaultdict(list)
    for who in sorted(by_person):
        revenues[exposed[who][0]].append(by_person[who])
    arms = [ArmCounts(arm, controls[arm], n, len(revenues[arm]), math.fsum(revenues[arm]),
                      tuple(revenues[arm]))
            for arm, n in sorted(exposures.items())]
    weights: dict[str, float] = dict(session.execute(
        select(facts.c.arm, func.max(facts.c.arm_weight))
        .where(*in_experiment, facts.c.arm_weight > 0)
        .group_by(facts.c.arm)
    ).all())
    return ExperimentData(arms, {a: float(w) for a, w in weights.items()}, currencies)


def experiments(session: Session, workspace_id: str, after: str, limit: int
                ) -> list[ExperimentSummary]:
    """Up to ``limit`` experiments with an id after ``after``, by id: what their exposures
    say about them, and the distinct people exposed."""
    joined, person = _people(facts)
    rows = session.execute(
        select(facts.c.experiment_id, func.max(facts.c.journey_id), func.max(facts.c.node_id),
               func.max(facts.c.content_key), func.min(facts.c.occur_time),
               func.max(facts.c.occur_time), func.count(distinct(person)))
        .select_from(joined)
        .where(facts.c.workspace_id == workspace_id, facts.c.experiment_id > after)
        .group_by(facts.c.experiment_id)
        .order_by(facts.c.experiment_id)
        .limit(limit)
    ).all()
    if not rows:
        return []
    arms: dict[str, list[ExperimentArm]] = defaultdict(list)
    for experiment_id, arm, control, weight in session.execute(
        select(facts.c.experiment_id, facts.c.arm,
               func.max(case((facts.c.control, 1), else_=0)), func.max(facts.c.arm_weight))
        .where(facts.c.workspace_id == workspace_id,
               facts.c.experiment_id.in_([r[0] for r in rows]))
        .group_by(facts.c.experiment_id, facts.c.arm)
        .order_by(facts.c.experiment_id, facts.c.arm)
    ).all():
        arms[experiment_id].append(ExperimentArm(arm, bool(control), float(weight)))
    return [ExperimentSummary(e, journey, node, content, first, last, int(n), arms[e])
            for e, journey, node, content, first, last, n in rows]


_LOOKUP_CHUNK = 1000


def _conversions_of(session: Session, workspace_id: str, people: Iterable[str]
                    ) -> Iterator[tuple[str, datetime, float, str]]:
    """(person, time, revenue, currency) of each distinct conversion of ``people`` under any of
    their profile ids: once per source event, at its earliest fact (ties by fact id).

    Plain index lookups in chunks, never a join the planner could turn into a scan (without
    statistics PostgreSQL scanned the aliases per exposed person: 3 s for 20,000 people): the
    ids merged into the people by the survivor index, then the conversions by profile id.
    Each chunk is planned for its values (cjo_platform.db.planning): the generic plan of
    psycopg's prepared statement (from the sixth run on) scanned the workspace's conversions
    per chunk, 0.25 s became 0.7 s from the second report on."""
    person_of = {who: who for who in people}
    alias = profile_aliases.c
    survivors = sorted(person_of)
    for start in range(0, len(survivors), _LOOKUP_CHUNK):
        chunk = survivors[start:start + _LOOKUP_CHUNK]
        person_of.update(session.execute(
            select(alias.merged_profile_id, alias.survivor_profile_id)
            .where(alias.workspace_id == workspace_id,
                   one_of(session, alias.survivor_profile_id, chunk)),
            execution_options=PLANNED_EACH_RUN).all())
    earliest: dict[tuple[str, str], tuple[datetime, str, float, str]] = {}
    profile_ids = sorted(person_of)
    for start in range(0, len(profile_ids), _LOOKUP_CHUNK):
        chunk = profile_ids[start:start + _LOOKUP_CHUNK]
        for profile, fact_id, source, when, revenue, currency in session.execute(
            select(facts.c.profile_id, facts.c.fact_id, facts.c.source_event_id,
                   facts.c.occur_time, facts.c.revenue, facts.c.currency)
            .where(facts.c.workspace_id == workspace_id,
                   one_of(session, facts.c.profile_id, chunk),
                   facts.c.type.in_(_CONVERSION_TYPES)),
            execution_options=PLANNED_EACH_RUN).all():
            key = (person_of[profile], source or fact_id)
            seen = (when, fact_id, float(revenue), currency)
            if key not in earliest or seen < earliest[key]:
                earliest[key] = seen
    for (who, _), (when, _, revenue, currency) in earliest.items():
        yield who, when, revenue, currency


@dataclass(frozen=True)
class AttributionData:
    conversions: list[Conversion]  # in time order
    touches: dict[str, list[TouchFact]]  # by profile, in time order, ties by message id


def attribution_data(session: Session, workspace_id: str, window: Window,
                     lookback: timedelta, all_profiles: bool) -> AttributionData:
    """The conversions of the window and the touch facts of [window start - lookback, window
    end) that can precede them: of the converting profiles, or of every profile when
    ``all_profiles`` (the Markov model also needs the paths that did not convert, and then the
    conversions of [window start - lookback, window start) too, which end earlier paths).

    Profile ids are people: a merged profile's conversions and touches are its survivor's. A
    conversion is counted once per (person, source event), at its earliest fact: one whose
    person has a conversion fact of the same source event before the facts read (an identity
    fact, stamped with the purchase event's time, before the window, its goal fact, stamped
    when orchestration applied it, inside: reviews rhunt2, rmine) was counted in an earlier
    window and is not counted again."""
    since = window.start - lookback if all_profiles else window.start
    rows = (_pg_attribution_rows if session.get_bind().dialect.name == "postgresql"
            else _attribution_rows)
    conversion_rows, touch_rows = rows(session, workspace_id, window, since, lookback,
                                       all_profiles)
    conversions: list[Conversion] = []
    counted = _counted_before(session, workspace_id, conversion_rows, since)
    for fid, profile, source, when, revenue in conversion_rows:
        # One conversion per (person, source event): a goal that is also a converted fact is
        # listed once, as its earliest fact.
        if (profile, source or fid) not in counted:
            counted.add((profile, source or fid))
            conversions.append(Conversion(fid, profile, when, float(revenue)))
    touches: dict[str, list[TouchFact]] = defaultdict(list)
    for profile, message, channel, journey, content, when in touch_rows:
        touches[profile].append(TouchFact(message, int(channel), journey, content, when))
    return AttributionData(conversions, touches)


def _counted_before(session: Session, workspace_id: str, rows: Sequence[Any],
                    before: datetime) -> set[tuple[str, str]]:
    """The (person, source event)s of ``rows`` (conversions of [``before``, window end)) with
    a conversion fact before ``before``: counted in an earlier window, whatever the lag
    between identity's fact (the event's time) and the goal's (when it was applied). Index
    lookups by profile id (ix_facts_profile) of the converting people only."""
    wanted = {(person, source) for _, person, source, _, _ in rows if source}
    if not wanted:
        return set()
    person_of = {who: who for who, _ in wanted}
    alias = profile_aliases.c
    survivors = sorted(person_of)
    for start in range(0, len(survivors), _LOOKUP_CHUNK):
        person_of.update(session.execute(
            select(alias.merged_profile_id, alias.survivor_profile_id)
            .where(alias.workspace_id == workspace_id,
                   one_of(session, alias.survivor_profile_id,
                          survivors[start:start + _LOOKUP_CHUNK])),
            execution_options=PLANNED_EACH_RUN).all())
    found: set[tuple[str, str]] = set()
    profile_ids = sorted(person_of)
    postgres = session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(profile_ids), _LOOKUP_CHUNK):
        chunk = profile_ids[start:start + _LOOKUP_CHUNK]
        if postgres:  # one probe of ix_facts_profile per profile id (a young workspace too)
            rows = session.execute(_PG_CONVERTED_BEFORE, {
                "workspace_id": workspace_id, "keys": pg_array(chunk), "before": before,
                "conversion_types": pg_array(_CONVERSION_TYPES)}).all()
        else:
            rows = session.execute(
                select(facts.c.profile_id, facts.c.source_event_id)
                .where(facts.c.workspace_id == workspace_id, one_of(session, facts.c.profile_id,
                                                                    chunk),
                       facts.c.occur_time < before, facts.c.type.in_(_CONVERSION_TYPES),
                       facts.c.source_event_id != ""),
                execution_options=PLANNED_EACH_RUN).all()
        for profile, source in rows:
            if (person_of[profile], source) in wanted:
                found.add((person_of[profile], source))
    return found


_PG_CONVERTED_BEFORE = pg_text(pg_probes(
    facts.name, "t.profile_id, t.source_event_id", {"profile_id": "keys"},
    where="t.occur_time < :before AND t.type = ANY(CAST(:conversion_types AS text[])) "
          "AND t.source_event_id <> ''"), ["keys", "conversion_types"]).bindparams(
    bindparam("before", type_=facts.c.occur_time.type))


def _attribution_rows(session: Session, workspace_id: str, window: Window, since: datetime,
                      lookback: timedelta, all_profiles: bool
                      ) -> tuple[Sequence[Any], Iterable[Any]]:
    """:func:`attribution_data`'s conversions (of [``since``, window end)) and touches: on
    SQLite (PostgreSQL: :func:`_pg_attribution_rows`)."""
    joined, person = _people(facts)
    conversions = session.execute(
        select(facts.c.fact_id, person, facts.c.source_event_id, facts.c.occur_time,
               facts.c.revenue)
        .select_from(joined)
        .where(facts.c.workspace_id == workspace_id, facts.c.type.in_(_CONVERSION_TYPES),
               facts.c.occur_time >= since, facts.c.occur_time < window.end)
        .order_by(facts.c.occur_time, facts.c.fact_id)
    ).all()
    touch_query = (
        select(person, _or_fact(facts.c.message_id), facts.c.channel,
               facts.c.journey_id, facts.c.content_key, facts.c.occur_time)
        .select_from(joined)
        .where(facts.c.workspace_id == workspace_id, facts.c.type.in_(_TOUCH_TYPES),
               facts.c.occur_time >= window.start - lookback, facts.c.occur_time < window.end)
        .order_by(person, facts.c.occur_time, _or_fact(facts.c.message_id), facts.c.fact_id)
    )
    if not all_profiles:
        # The touches of every profile id of the converting people (their own and those merged
        # into them), filtered on the stored profile id so the database can use it.
        converted = facts.alias("converted")
        converted_joined, converted_person = _people(converted)
        converting = (select(converted_person).select_from(converted_joined)
                      .where(converted.c.workspace_id == workspace_id,
                             converted.c.type.in_(_CONVERSION_TYPES),
                             converted.c.occur_time >= window.start,
                             converted.c.occur_time < window.end))
        alias = profile_aliases.c
        touch_query = touch_query.where(facts.c.profile_id.in_(union(
            converting,
            select(alias.merged_profile_id).where(alias.workspace_id == workspace_id,
                                                  alias.survivor_profile_id.in_(converting))))
        )
    return conversions, session.execute(touch_query)


# On PostgreSQL attribution's facts are probed by (workspace_id, type, time range) on
# ix_facts_type_time, once per fact type (cjo_platform.db.probes), also for a workspace the
# planner's statistics do not know yet (a new tenant, a fresh database): with the workspace a
# constant, such a workspace's every fact was read through ix_facts_funnel (or
# ix_facts_profile) by the workspace alone and filtered by type and time, per report. A fact's
# person: the survivor its profile was merged into (the alias's primary key), else itself.
_PG_PERSON = ("coalesce((SELECT a.survivor_profile_id FROM profile_aliases AS a "
              "WHERE a.workspace_id = f.workspace_id AND a.merged_profile_id = f.profile_id), "
              "f.profile_id)")


def _pg_facts(picked: str, types: str, since: str) -> str:
    """The facts of the parameter ``types``'s types in [``since``, :until), their columns
    ``picked`` (and workspace_id, profile_id), one probe of ix_facts_type_time per type."""
    return pg_probes(facts.name, f"t.workspace_id, t.profile_id, {picked}", {"type": types},
                     where=f"t.occur_time >= :{since} AND t.occur_time < :until")


_TIMES = [bindparam(name, type_=facts.c.occur_time.type)
          for name in ("since", "until", "touch_since", "window_start")]


def _pg_attribution_rows(session: Session, workspace_id: str, window: Window, since: datetime,
                         lookback: timedelta, all_profiles: bool
                         ) -> tuple[Sequence[Any], Iterable[Any]]:
    """:func:`_attribution_rows` on PostgreSQL: the same rows, the facts probed per type."""
    params = {"workspace_id": workspace_id, "since": since, "until": window.end,
              "touch_since": window.start - lookback, "window_start": window.start,
              "conversion_types": pg_array(_CONVERSION_TYPES),
              "touch_types": pg_array(_TOUCH_TYPES)}
    return (session.execute(_PG_CONVERSIONS, params).all(),
            session.execute(_pg_touches(all_profiles), params))


def _pg_attribution(sql: str) -> TextClause:
    return pg_text(sql, ["conversion_types", "touch_types"]).bindparams(
        *(time for time in _TIMES if f":{time.key}" in sql))


_PG_CONVERSIONS = _pg_attribution(
    f"SELECT f.fact_id, {_PG_PERSON} AS person, f.source_event_id, f.occur_time, f.revenue "
    "FROM ({}) AS f ORDER BY f.occur_time, f.fact_id".format(_pg_facts(
        "t.fact_id, t.source_event_id, t.occur_time, t.revenue", "conversion_types", "since"))
).columns(facts.c.fact_id, facts.c.source_event_id, facts.c.occur_time, facts.c.revenue,
          person=String)


@functools.cache
def _pg_touches(all_profiles: bool) -> Executable:
    """Attribution's touches on PostgreSQL (:func:`attribution_data`): of every profile, or
    of the window's converting people (their own profile ids and those merged into them)."""
    touched = _pg_facts("t.fact_id, t.message_id, t.channel, t.journey_id, t.content_key, "
                        "t.occur_time", "touch_types", "touch_since")
    sql = (f"SELECT {_PG_PERSON} AS person, coalesce(nullif(f.message_id, ''), f.fact_id) "
           "AS message, f.channel, f.journey_id, f.content_key, f.occur_time, f.fact_id "
           f"FROM ({touched}) AS f")
    if not all_profiles:
        converting = (f"SELECT {_PG_PERSON} FROM ("
                      f"{_pg_facts('t.fact_id', 'conversion_types', 'window_start')}) AS f")
        sql = (f"WITH converting(person) AS ({converting}) {sql} WHERE f.profile_id IN ("
               "SELECT person FROM converting UNION SELECT a.merged_profile_id "
               "FROM profile_aliases AS a WHERE a.workspace_id = :workspace_id "
               "AND a.survivor_profile_id IN (SELECT person FROM converting))")
    sql = (f"SELECT person, message, channel, journey_id, content_key, occur_time FROM ({sql}) "
           "AS touch ORDER BY person, occur_time, message, fact_id")
    return _pg_attribution(sql).columns(
        facts.c.channel, facts.c.journey_id, facts.c.content_key, facts.c.occur_time,
        person=String, message=String)
