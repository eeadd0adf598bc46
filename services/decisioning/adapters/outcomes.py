"""What outcomes read and write: forwarded ids already received, the points' rewards, open
decisions and their rewards, profile aliases, and the learning worker's claims (decisions whose
outcome is known and not yet learned). Exposures are service_layer.exposures' (one path for
RecordExposures and delivery's SENT facts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    FromClause,
    Row,
    String,
    and_,
    bindparam,
    column,
    delete,
    false,
    func,
    literal,
    or_,
    select,
    text,
    update,
    values,
)
from sqlalchemy.orm import Session

from cjo_decisioning.adapters import catalogue
from cjo_decisioning.adapters.tables import (
    EXPOSED,
    NOT_REWARDED,
    PENDING,
    REWARDED,
    decision_points,
    decisions,
    early_rewards,
    profile_aliases,
    received,
)
from cjo_decisioning.domain.catalogue import DecisionPoint, point_from_json
from cjo_decisioning.domain.outcomes import EarlyReward, OpenDecision, PendingDecision, Rewarded
from cjo_decisioning.domain.watermarks import LearningCutoffs
from cjo_platform.db import insert_ignore, one_of, pg_array, upsert
from cjo_platform.db.probes import pg_by_keys, pg_text
from cjo_platform.limits import MAX_ID_LENGTH

# What an erased decision's features become: the bias alone (the column is not nullable).
ERASED_FEATURES = {"i": [0], "v": [1.0]}

d = decisions.c
p = decision_points.c
a = profile_aliases.c
e = early_rewards.c


def first_received(session: Session, workspace_id: str, source_ids: Sequence[str],
                   now: datetime) -> set[str]:
    """Record ``source_ids`` as received; returns those that were new (a concurrent call with
    the same id waits on the primary key, and exactly one of them gets it)."""
    unique = sorted(set(source_ids))
    return set(insert_ignore(session, received, [
        {"workspace_id": workspace_id, "source_id": s, "receive_time": now} for s in unique],
        returning=received.c.source_id))


def prune_received(session: Session, before: datetime, limit: int) -> int:
    """Forget up to ``limit`` forwarded ids received before ``before`` (ix_received_time);
    how many. Rows another replica is pruning are skipped (SKIP LOCKED on PostgreSQL)."""
    keys = session.execute(
        select(received.c.workspace_id, received.c.source_id)
        .where(received.c.receive_time < before).limit(limit)
        .with_for_update(skip_locked=True)).all()
    if keys:
        session.execute(delete(received).where(
            received.c.workspace_id == bindparam("w"), received.c.source_id == bindparam("s")),
            [{"w": k.workspace_id, "s": k.source_id} for k in keys])
    return len(keys)


# --- decision points ------------------------------------------------------------------------


def workspace_points(session: Session, workspace_id: str) -> list[DecisionPoint]:
    """Every point of the workspace (one query per call: rewards look for their event)."""
    return [point_from_json(spec) for spec in session.execute(
        select(p.spec).where(p.workspace_id == workspace_id)).scalars()]


def record_point_errors(session: Session, workspace_id: str,
                        errors: Mapping[str, tuple[int, str]], now: datetime) -> None:
    """Count run-time errors on their points (error_count, last_error)."""
    for key, (count, error) in sorted(errors.items()):
        catalogue.record_point_error(session, workspace_id, key, count, error, now)


# --- people and rewards ---------------------------------------------------------------------


# The survivor of an erased profile id (and of the ids merged into it): what comes for it
# late, queued before the erasure (an open, a merge into it), is ignored. The ids themselves
# stay, as orchestration's retired profiles do; nothing links them to each other any more.
ERASED = ""


def people(session: Session, workspace_id: str, profile_ids: Iterable[str]
           ) -> dict[str, list[str]]:
    """Every profile id of each person: the id itself and the ids merged into it."""
    found: dict[str, list[str]] = {i: [i] for i in set(profile_ids)}
    wanted = sorted(found.keys() - {ERASED})
    if not wanted:
        return found
    for r in _aliases(session, workspace_id, a.survivor_profile_id, wanted):
        found[r.survivor_profile_id].append(r.profile_id)
    return found


def survivors(session: Session, workspace_id: str, profile_ids: Iterable[str]
              ) -> dict[str, str]:
    """The survivor of each of ``profile_ids`` that was merged away (:data:`ERASED` for an
    erased one)."""
    wanted = sorted(set(profile_ids))
    if not wanted:
        return {}
    return {r.profile_id: r.survivor_profile_id
            for r in _aliases(session, workspace_id, a.profile_id, wanted)}


def _aliases(session: Session, workspace_id: str, key: Column[str], wanted: list[str]
             ) -> Iterable[Row[Any]]:
    """The (profile_id, survivor_profile_id) aliases whose ``key`` is one of ``wanted``."""
    if session.get_bind().dialect.name == "postgresql":
        return session.execute(_PG_ALIASES[key.name], {"workspace_id": workspace_id,
                                                       "keys": pg_array(wanted)})
    return session.execute(select(a.profile_id, a.survivor_profile_id).where(
        a.workspace_id == workspace_id, one_of(session, key, wanted)))


def add_alias(session: Session, workspace_id: str, merged_profile_id: str,
              survivor_profile_id: str, now: datetime) -> str | None:
    """``merged_profile_id`` is part of the survivor's person now, and so is every id merged
    into it before; returns the id the person is known by (the survivor's own survivor when
    the survivor was merged away already), or None for a merge that would close a cycle
    (ignored: identity merges a profile away once, and a cycle would lose the person) or of
    an erased profile, or :data:`ERASED` when the survivor was erased (nothing is recorded:
    the caller erases the merged profile too, as identity did).

    Aliases are flat (each points at the last link, so a person's ids are one lookup) whatever
    order the merges arrive in: merges are forwarded keyed by their survivor, so b -> c may
    come before a -> b, and a -> b then points at c, not b."""
    _lock_aliases(session, workspace_id)
    known = survivors(session, workspace_id, [merged_profile_id, survivor_profile_id])
    final = known.get(survivor_profile_id, survivor_profile_id)
    if final == merged_profile_id or known.get(merged_profile_id) == ERASED:
        return None
    if final == ERASED:
        return ERASED
    session.execute(update(profile_aliases).where(
        a.workspace_id == workspace_id, a.survivor_profile_id == merged_profile_id)
        .values(survivor_profile_id=final))
    upsert(session, profile_aliases, [
        {"workspace_id": workspace_id, "profile_id": merged_profile_id,
         "survivor_profile_id": final, "merge_time": now}],
        lambda excluded: {"survivor_profile_id": excluded.survivor_profile_id,
                          "merge_time": excluded.merge_time})
    return final


def _lock_aliases(session: Session, workspace_id: str) -> None:
    """Serialise the workspace's merges and erasures (PostgreSQL): two transactions folding a
    chain (a -> b, b -> c) at once would each miss the other's row."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(current_schema() || :key))"),
                        {"key": f"profile_aliases:{workspace_id}"})


def erase_people(session: Session, workspace_id: str, profile_ids: Iterable[str],
                 now: datetime) -> int:
    """Erase what decisions hold about the people of ``profile_ids`` (identity erased them),
    and their aliases (each id now points at :data:`ERASED`); how many decisions were
    anonymised.

    Decisions are anonymised, not deleted: the action, its pick probability, the ranked
    candidates and the outcome stay, so reports and off-policy evaluation keep counting
    them, while the profile id, the request id (a replay finds nothing), the context (free
    attributes), the features (hashed traits) and the reward event go. One not yet learned is
    closed (learned without learning it): its features are gone."""
    wanted = sorted(set(profile_ids))
    if not wanted:
        return 0
    result = session.execute(
        update(decisions)
        .where(d.workspace_id == workspace_id, one_of(session, d.profile_id, wanted))
        .values(profile_id="", request_id="", context={}, features=ERASED_FEATURES,
                reward_event_id="", learned=True, lease_owner="", lease_until=None))
    _lock_aliases(session, workspace_id)
    session.execute(update(profile_aliases).where(
        a.workspace_id == workspace_id, one_of(session, a.survivor_profile_id, wanted))
        .values(survivor_profile_id=ERASED))
    upsert(session, profile_aliases, [
        {"workspace_id": workspace_id, "profile_id": i, "survivor_profile_id": ERASED,
         "merge_time": now} for i in wanted],
        lambda excluded: {"survivor_profile_id": excluded.survivor_profile_id,
                          "merge_time": excluded.merge_time})
    session.execute(delete(early_rewards).where(
        e.workspace_id == workspace_id, one_of(session, e.profile_id, wanted)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def open_decisions(session: Session, workspace_id: str, profile_ids: Iterable[str],
                   point_keys: Iterable[str]) -> list[OpenDecision]:
    """The exposed (not yet rewarded or lapsed) decisions of ``profile_ids`` at the points.

    Selected by person and outcome only (ix_decisions_person) and filtered by point and by
    ``learned`` here: with the points in the WHERE clause SQLite planned the query on the
    point's time index, and with ``learned`` on the learning worker's index, and read every
    decision the point ever logged, or every open one, on each call; a person has few
    exposed decisions."""
    profiles, keys = sorted(set(profile_ids)), set(point_keys)
    if not profiles or not keys:
        return []
    if session.get_bind().dialect.name == "postgresql":
        rows = session.execute(_PG_OPEN, {"workspace_id": workspace_id,
                                          "keys": pg_array(profiles)})
    else:
        rows = session.execute(_OPEN_SELECT.where(
            d.workspace_id == workspace_id, one_of(session, d.profile_id, profiles),
            d.outcome == EXPOSED))
    return [OpenDecision(r.decision_id, r.decision_point, r.profile_id, r.action,
                         r.expose_time, r.reward_deadline)
            for r in rows if r.decision_point in keys and not r.learned]


def pending_decisions(session: Session, workspace_id: str, profile_ids: Iterable[str],
                      point_keys: Iterable[str], until: datetime, limit: int
                      ) -> list[PendingDecision]:
    """The ``limit`` latest decided until ``until`` of the pending (decided, not exposed yet,
    not learned) decisions of each of ``profile_ids`` at each point: those a reward event
    that came before the exposure is kept for (domain.outcomes.MAX_KEPT_PER_EVENT). A
    person's decisions may stay pending for months (messages never sent), and reading every
    one on each reward event took a person with 30,000 of them 0.5 s per RecordEvents call.

    PostgreSQL probes ix_decisions_person per person and point (workspace, profile, PENDING)
    and returns the latest; SQLite ranks them by person and point (the points and
    ``learned`` are not in its WHERE clause: see open_decisions). Not bounded by the window:
    it opens at the exposure, which may come any time after the decision."""
    profiles, keys = sorted(set(profile_ids)), sorted(set(point_keys))
    if not profiles or not keys:
        return []
    if session.get_bind().dialect.name == "postgresql":
        pairs = [(profile, key) for profile in profiles for key in keys]
        rows = session.execute(_PG_PENDING, {
            "workspace_id": workspace_id, "keys": pg_array([p for p, _ in pairs]),
            "points": pg_array([k for _, k in pairs]), "until": until, "limit": limit}).all()
    else:
        # By learned too: a learned one takes no place of the others.
        rank = func.row_number().over(
            partition_by=(d.profile_id, d.decision_point, d.learned),
            order_by=(d.decide_time.desc(), d.decision_id.desc())).label("rank")
        ranked = select(*_PENDING_COLUMNS, d.learned, rank).where(
            d.workspace_id == workspace_id, one_of(session, d.profile_id, profiles),
            d.outcome == PENDING, d.decide_time <= until).subquery()
        rows = [r for r in session.execute(select(ranked).where(ranked.c.rank <= limit))
                if r.decision_point in keys and not r.learned]
    return [PendingDecision(r.decision_id, r.decision_point, r.profile_id, r.action,
                            r.decide_time) for r in rows]


# On PostgreSQL the reads by person of a reward (the ids merged into a person, their open
# decisions) and a merge's survivors probe the index on (workspace_id, key) once per key
# (cjo_platform.db.probes), also for a workspace the planner's statistics do not know yet:
# with the workspace a constant, such a workspace's every alias (or exposed decision) was
# read through an index's workspace prefix and filtered by the keys, per call.
_OPEN_COLUMNS = (d.decision_id, d.decision_point, d.profile_id, d.action, d.expose_time,
                 d.reward_deadline, d.learned)
_OPEN_SELECT = select(*_OPEN_COLUMNS)
_PG_OPEN = pg_by_keys(_OPEN_COLUMNS, d.profile_id, where=f"t.outcome = {EXPOSED}")
_PENDING_COLUMNS = (d.decision_id, d.decision_point, d.profile_id, d.action, d.decide_time)
# Per (person, point): its pending decisions found by ix_decisions_person, then the latest
# of them. The inner OFFSET 0 keeps the ORDER BY ... LIMIT out of the probe's plan: with it,
# the planner walked ix_decisions_decided backwards from ``until`` over every workspace's
# decisions, for a person with none (22 ms with 60,000 decisions, growing with the log).
_PG_PENDING = pg_text(
    "SELECT x.* FROM (SELECT CAST(:workspace_id AS text) AS id OFFSET 0) AS w "
    "CROSS JOIN unnest(CAST(:keys AS text[]), CAST(:points AS text[])) AS k(profile_id, point) "
    "CROSS JOIN LATERAL (SELECT y.* FROM (SELECT "
    + ", ".join(f"t.{c.name}" for c in _PENDING_COLUMNS)
    + " FROM decisions AS t WHERE t.workspace_id = w.id AND t.profile_id = k.profile_id "
    f"AND t.outcome = {PENDING} AND t.decision_point = k.point AND NOT t.learned "
    "AND t.decide_time <= :until OFFSET 0) AS y "
    "ORDER BY y.decide_time DESC, y.decision_id DESC LIMIT :limit) AS x",
    ["keys", "points"]).bindparams(
    bindparam("until", type_=d.decide_time.type)).columns(*_PENDING_COLUMNS)
_PG_ALIASES = {key.name: pg_by_keys([a.profile_id, a.survivor_profile_id], key)
               for key in (a.survivor_profile_id, a.profile_id)}


def reward(session: Session, workspace_id: str, rewarded: Sequence[Rewarded]) -> int:
    """Mark the decisions REWARDED (only while still EXPOSED and not learned); how many were."""
    if not rewarded:
        return 0
    result = session.execute(_reward_statement(workspace_id), [_reward_values(r)
                                                               for r in rewarded])
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def reward_each(session: Session, workspace_id: str, rewarded: Sequence[Rewarded]
                ) -> list[Rewarded]:
    """:func:`reward`, one by one: those that were applied."""
    statement = _reward_statement(workspace_id)
    return [r for r in rewarded
            if session.execute(statement, _reward_values(r)).rowcount]  # type: ignore[attr-defined]


def _reward_statement(workspace_id: str) -> Any:
    return (update(decisions)
            .where(d.workspace_id == workspace_id, d.decision_id == bindparam("i"),
                   d.outcome == EXPOSED, d.learned == false())
            .values(outcome=REWARDED, reward_time=bindparam("t"),
                    reward_event_id=bindparam("e")))


def _reward_values(rewarded: Rewarded) -> dict[str, Any]:
    return {"i": rewarded.decision_id, "t": rewarded.reward_time,
            "e": rewarded.reward_event_id[:128]}


# --- early rewards (a reward event before its decision's exposure) -----------------------


def keep_early_rewards(session: Session, workspace_id: str, early: Sequence[EarlyReward]
                       ) -> None:
    """Keep reward events for pending decisions (a repeat is kept once)."""
    if early:
        insert_ignore(session, early_rewards, [
            {"workspace_id": workspace_id, "decision_id": k.decision_id,
             "event_id": k.event_id[:MAX_ID_LENGTH], "decision_point": k.decision_point,
             "profile_id": k.profile_id, "event_time": k.event_time,
             "expire_time": k.expire_time} for k in early])


def early_rewards_of(session: Session, workspace_id: str, decision_ids: Iterable[str]
                     ) -> list[EarlyReward]:
    """The reward events kept for ``decision_ids``, locked with every decision's row of the
    same events until the transaction ends (FOR UPDATE, in (event, decision) order, the same
    in every transaction): two exposures recorded at once, each of a decision an event was
    kept for, both read the event before either committed, and the event rewarded both; now
    the second waits, and finds the rows the first took gone."""
    wanted = sorted(set(decision_ids))
    if not wanted:
        return []
    events = sorted(set(session.scalars(select(e.event_id).where(
        e.workspace_id == workspace_id, one_of(session, e.decision_id, wanted)))))
    if not events:
        return []
    locked = session.execute(
        select(early_rewards)
        .where(e.workspace_id == workspace_id, one_of(session, e.event_id, events))
        .order_by(e.event_id, e.decision_id).with_for_update()).all()
    chosen = set(wanted)
    return [EarlyReward(r.decision_id, r.decision_point, r.profile_id, r.event_id,
                        r.event_time, r.expire_time)
            for r in locked if r.decision_id in chosen]


def drop_early_rewards(session: Session, workspace_id: str, decision_ids: Iterable[str],
                       used: Iterable[tuple[str, str]]) -> None:
    """Forget the events kept for ``decision_ids`` (exposed now) and the ``used`` (point,
    event id: its reward applied) for every decision (an event rewards one decision per
    point)."""
    wanted = sorted(set(decision_ids))
    if wanted:
        session.execute(delete(early_rewards).where(
            e.workspace_id == workspace_id, one_of(session, e.decision_id, wanted)))
    for point, event_id in sorted(set(used)):
        session.execute(delete(early_rewards).where(
            e.workspace_id == workspace_id, e.event_id == event_id,
            e.decision_point == point))


def exposed_with_early_rewards(session: Session, limit: int
                               ) -> list[tuple[str, str, datetime | None, datetime | None]]:
    """Up to ``limit`` decisions no longer pending that events are still kept for, as
    (workspace, decision id, exposure, deadline): an event kept while its decision's exposure
    was being recorded by another transaction (PostgreSQL), taken by the learning worker. The
    exposure and deadline are None for a decision that can take no reward (rewarded already,
    lapsed, learned, never exposed): its events are only to be forgotten (for it)."""
    rows = session.execute(
        select(d.workspace_id, d.decision_id, d.outcome, d.learned, d.expose_time,
               d.reward_deadline).distinct()
        .select_from(early_rewards.join(decisions, and_(
            d.workspace_id == e.workspace_id, d.decision_id == e.decision_id)))
        .where(d.outcome != PENDING).order_by(d.workspace_id, d.decision_id)
        .limit(limit)).all()
    return [(r.workspace_id, r.decision_id, *((r.expose_time, r.reward_deadline)
                                              if r.outcome == EXPOSED and not r.learned
                                              else (None, None))) for r in rows]


def prune_early_rewards(session: Session, before: datetime, limit: int) -> int:
    """Forget up to ``limit`` kept events whose latest window ended before ``before`` (their
    decision was never exposed in time); how many. SKIP LOCKED as prune_received."""
    keys = session.execute(
        select(e.workspace_id, e.decision_id, e.event_id)
        .where(e.expire_time < before).limit(limit).with_for_update(skip_locked=True)).all()
    if keys:
        session.execute(delete(early_rewards).where(
            e.workspace_id == bindparam("w"), e.decision_id == bindparam("i"),
            e.event_id == bindparam("v")),
            [{"w": k.workspace_id, "i": k.decision_id, "v": k.event_id} for k in keys])
    return len(keys)


def close_point_decisions(session: Session, workspace_id: str, point_key: str) -> int:
    """Mark every not yet learned decision of a deleted point learned (its outcome as it
    stands), so a point created again with the same key neither rewards them by its own
    reward event nor learns them into its fresh models; how many were."""
    result = session.execute(
        update(decisions)
        .where(d.workspace_id == workspace_id, d.decision_point == point_key,
               d.learned == false())
        .values(learned=True, lease_owner="", lease_until=None))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- learning -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    workspace_id: str
    decision_point: str
    action: str
    decision_id: str


def _learnable(cutoffs: LearningCutoffs) -> tuple[FromClause, ColumnElement[bool]]:
    """Decisions whose outcome is final (their window closed before their workspace's cutoff:
    the grace ago, and the grace before the watermark of the rewards forwarded, see
    domain.watermarks) and that are not learned yet, rewarded or not.

    A reward is known as soon as it arrives but a failure only when the window closes; learning
    rewards at once and failures a window later fed the model one-sided batches, which the
    sequential Laplace update does not compose: a 5% action read 0.97 after its rewards and
    0.0025 after its failures, and the benchmark's bandit collapsed onto one action (40% of
    the oracle instead of 87%). So every decision teaches the model once its outcome is final,
    in batches that mix rewards and failures as they happened. The grace: a conversion inside
    the window reaches us through identity's outbox forwarder (polls, retries, restarts), and a
    decision learned as NOT_REWARDED can never be rewarded after; it does not widen the window
    (a reward's own event time must fall inside it, domain.outcomes)."""
    clause = and_(d.learned == false(), d.outcome.in_((REWARDED, EXPOSED)),
                  d.reward_deadline < cutoffs.default)
    if not cutoffs.by_workspace:
        return decisions, clause
    # The workspaces held further back (those identity reported behind), as a list the
    # decisions are joined to (a hash or index look-up per decision), not a CASE of a branch
    # per workspace, which every candidate decision ran through (1,000 workspaces and 200,000
    # decisions waiting: 3 s a claim). The range above still bounds the scan of
    # ix_decisions_learning.
    deadline_type = d.reward_deadline.type
    held_back = values(column("workspace_id", String), column("cutoff", deadline_type),
                       name="held_back").data(sorted(cutoffs.by_workspace.items())
                                              ).cte("held_back")
    return (decisions.outerjoin(held_back, held_back.c.workspace_id == d.workspace_id),
            and_(clause, d.reward_deadline < func.coalesce(
                held_back.c.cutoff, literal(cutoffs.default, deadline_type))))


def count_learnable(session: Session, cutoffs: LearningCutoffs) -> int:
    """Decisions whose outcome is final and not yet learned: the learning worker's lag."""
    source, learnable = _learnable(cutoffs)
    return int(session.execute(
        select(func.count()).select_from(source).where(learnable)).scalar_one())


def claim_learnable(session: Session, now: datetime, owner: str, lease: timedelta,
                    limit: int, cutoffs: LearningCutoffs) -> list[Claimed]:
    """Lease up to ``limit`` decisions whose outcome is final and not yet learned: rewarded
    ones and exposed ones whose window closed before ``cutoffs``. Listed and locked in one
    statement (SKIP LOCKED on PostgreSQL, so replicas claim different decisions) and leased to
    ``owner``; a replica that dies leaves them to the others once the lease runs out."""
    source, learnable = _learnable(cutoffs)
    rows = session.execute(
        select(d.workspace_id, d.decision_id, d.decision_point, d.action).select_from(source)
        .where(learnable, or_(d.lease_until.is_(None), d.lease_until <= now))
        .order_by(d.reward_deadline).limit(limit)
        .with_for_update(of=decisions, skip_locked=True)).all()
    if not rows:
        return []
    session.execute(
        update(decisions)
        .where(d.workspace_id == bindparam("w"), d.decision_id == bindparam("i"))
        .values(lease_owner=owner, lease_until=now + lease),
        [{"w": r.workspace_id, "i": r.decision_id} for r in rows])
    return [Claimed(r.workspace_id, r.decision_point, r.action, r.decision_id) for r in rows]


def held(session: Session, workspace_id: str, decision_ids: Sequence[str], owner: str,
         cutoffs: LearningCutoffs) -> list[tuple[str, Any, bool]]:
    """The claimed decisions still held by ``owner`` and not learned, locked, as
    (decision_id, features JSON, rewarded), in id order. A decision whose lease ran out and
    was learned by another replica is left out (it is learned once)."""
    rows = session.execute(
        select(d.decision_id, d.features, d.outcome)
        .where(d.workspace_id == workspace_id, one_of(session, d.decision_id, decision_ids),
               d.lease_owner == owner, _learnable(LearningCutoffs(cutoffs.of(workspace_id)))[1])
        .order_by(d.decision_id).with_for_update()).all()
    return [(r.decision_id, r.features, r.outcome == REWARDED) for r in rows]


def mark_learned(session: Session, workspace_id: str, outcomes: Sequence[tuple[str, bool]]
                 ) -> None:
    """Learned; a lapsed decision (rewarded False) becomes NOT_REWARDED."""
    if not outcomes:
        return
    session.execute(
        update(decisions)
        .where(d.workspace_id == workspace_id, d.decision_id == bindparam("i"))
        .values(learned=True, lease_owner="", lease_until=None, outcome=bindparam("o")),
        [{"i": i, "o": REWARDED if rewarded else NOT_REWARDED} for i, rewarded in outcomes])
