"""Circuit breakers shared by every sender replica (domain/breaker.py holds the rules).

A breaker's row holds its consecutive failures, until when it is open and until when a
half-open breaker's one trial call is out. Reads take no lock; a change locks the row, applies
the domain's rule to what is stored (not to what the caller last saw) and writes it back, all in
the caller's transaction, so two replicas counting failures, or both wanting the one trial of a
half-open breaker, take turns and the second sees the first's result. A row is created on a
provider's first change, only while the provider exists (its row is locked first, shared, the
lock order of deleting or updating it: provider_store), and goes with the provider. Workspace
"" holds the deployment's own routes (its SMTP server, the inbox), which have no provider row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from cjo_delivery.adapters.tables import provider_breakers, providers
from cjo_delivery.domain.breaker import CircuitBreaker
from cjo_platform.db import insert_ignore
from cjo_platform.db.engine import keys_in

b = provider_breakers.c
BreakerKey = tuple[str, str]  # workspace id ("" for the deployment's routes), provider id
T = TypeVar("T")


def read(session: Session, keys: Sequence[BreakerKey],
         like: Callable[[BreakerKey], CircuitBreaker]) -> dict[BreakerKey, CircuitBreaker]:
    """The stored breaker of each key (closed when it has no row); ``like`` gives a key's
    threshold and cool-down."""
    if not keys:
        return {}
    rows = session.execute(
        select(b.workspace_id, b.provider_id, b.failures, b.open_until, b.trial_until)
        .where(keys_in(session, [b.workspace_id, b.provider_id], sorted(set(keys))))).all()
    stored = {(r.workspace_id, r.provider_id): r for r in rows}
    found = {}
    for key in keys:
        breaker = like(key)
        row = stored.get(key)
        found[key] = CircuitBreaker(breaker.threshold, breaker.cool_down,
                                    *((row.failures, row.open_until, row.trial_until)
                                      if row is not None else (0, None, None)))
    return found


def change(session: Session, key: BreakerKey, like: CircuitBreaker,
           rule: Callable[[CircuitBreaker], T]) -> tuple[T, CircuitBreaker] | None:
    """Apply ``rule`` to the stored breaker of ``key`` under its row lock and store the result;
    returns what the rule returned and the breaker as stored. None when the provider is gone."""
    workspace_id, provider_id = key
    if workspace_id:
        exists = session.execute(
            select(providers.c.provider_id)
            .where(providers.c.workspace_id == workspace_id,
                   providers.c.provider_id == provider_id)
            .with_for_update(read=True)).first()
        if exists is None:
            return None
    insert_ignore(session, provider_breakers, [{"workspace_id": workspace_id,
                                                "provider_id": provider_id, "failures": 0,
                                                "open_until": None, "trial_until": None}])
    row = session.execute(
        select(b.failures, b.open_until, b.trial_until)
        .where(b.workspace_id == workspace_id, b.provider_id == provider_id)
        .with_for_update()).one()
    breaker = CircuitBreaker(like.threshold, like.cool_down, row.failures, row.open_until,
                             row.trial_until)
    result = rule(breaker)
    session.execute(
        update(provider_breakers)
        .where(b.workspace_id == workspace_id, b.provider_id == provider_id)
        .values(failures=breaker.failures, open_until=breaker.open_until,
                trial_until=breaker.trial_until))
    return result, breaker


def reset_failures(session: Session, key: BreakerKey) -> None:
    """A success seen by a replica whose copy showed the breaker closed and clean: zero the
    stored failure count if there is one, so the count stays consecutive across replicas. A
    conditional update, with no lock when there is nothing to reset (the usual case); an open
    or half-open breaker is left alone (only its trial's success closes it)."""
    workspace_id, provider_id = key
    session.execute(_RESET, {"w": workspace_id, "p": provider_id})


# Run with every group of outcomes: built once.
_RESET = update(provider_breakers).where(
    b.workspace_id == bindparam("w"), b.provider_id == bindparam("p"), b.failures > 0,
    b.open_until.is_(None), b.trial_until.is_(None),
).values(failures=0)
