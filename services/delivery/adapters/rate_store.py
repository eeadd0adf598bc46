"""Storage of provider rate limits shared by every sender replica (domain/ratelimit.py).

A round locks the rows of its rate-limited providers (in key order, so two replicas cannot
deadlock; SQLite serialises writers anyway), reserves from each and writes the new arrival
times back, all in the caller's one transaction. Rows are created on first use, and only for
providers that still exist: the provider rows are locked first (shared), so a deletion either
happens before (no row is created) or waits for the round's commit and then removes the row
with the provider (provider_store.delete_provider); rows never outlive their provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

from cjo_delivery.adapters.tables import provider_rates, providers
from cjo_delivery.domain.ratelimit import Grant, RateLimit
from cjo_platform.db import insert_ignore
from cjo_platform.db.engine import keys_in

r = provider_rates.c
ProviderKey = tuple[str, str]  # workspace id, provider id

_SAVE = (update(provider_rates)
         .where(and_(r.workspace_id == bindparam("w"), r.provider_id == bindparam("p")))
         .values(tat=bindparam("t"), promised=bindparam("promised")))


def _locked(session: Session, keys: Sequence[ProviderKey], now: datetime | None = None
            ) -> dict[ProviderKey, tuple[datetime, datetime | None]]:
    """The arrival time and latest turn of each provider, its row locked until commit; rows
    missing are created first when ``now`` is given."""
    ordered = sorted(keys)
    if now is not None:
        # Same lock order as deleting or updating a provider: its row, then its rate.
        existing = session.execute(
            select(providers.c.workspace_id, providers.c.provider_id)
            .where(keys_in(session, [providers.c.workspace_id, providers.c.provider_id],
                           ordered))
            .order_by(providers.c.workspace_id, providers.c.provider_id)
            .with_for_update(read=True)).all()
        # An arrival time of now is a full burst: what a provider never limited before has.
        insert_ignore(session, provider_rates, [{"workspace_id": w, "provider_id": p,
                                                 "tat": now, "promised": None}
                                                for w, p in existing])
    rows = session.execute(
        select(r.workspace_id, r.provider_id, r.tat, r.promised)
        .where(keys_in(session, [r.workspace_id, r.provider_id], ordered))
        .order_by(r.workspace_id, r.provider_id).with_for_update()).all()
    return {(row.workspace_id, row.provider_id): (row.tat, row.promised) for row in rows}


def reserve(session: Session, wants: Mapping[ProviderKey, tuple[RateLimit, int]],
            now: datetime) -> dict[ProviderKey, Grant]:
    """Reserve ``want`` sends of each provider at ``now``; a want of 0 only reads where its
    turns stand. A provider deleted meanwhile gets no grant."""
    if not wants:
        return {}
    stored = _locked(session, list(wants), now)
    grants: dict[ProviderKey, Grant] = {}
    changes = []
    for key, (limit, want) in wants.items():
        row = stored.get(key)
        if row is None:
            continue
        tat, promised = row
        granted, after = limit.reserve(tat, now, want)
        grants[key] = Grant(limit, granted, after, promised, exhausted=granted < want)
        if granted:
            changes.append({"w": key[0], "p": key[1], "t": after, "promised": promised})
    if changes:
        session.execute(_SAVE, changes)
    return grants


def settle(session: Session, grants: Mapping[ProviderKey, Grant], now: datetime) -> None:
    """Give back the sends a round reserved and did not use, and record the latest turn it
    handed to a refused message (so the next round's turns come after it, on any replica)."""
    changed = {key: grant for key, grant in grants.items()
               if not grant.failed and (grant.unused or grant.last_turn is not None)}
    if not changed:
        return
    stored = _locked(session, list(changed))
    changes = []
    for key, grant in changed.items():
        if key not in stored:  # the provider was deleted during the round
            continue
        tat, promised = stored[key]
        turn = grant.last_turn
        if turn is not None and (promised is None or turn > promised):
            promised = turn
        changes.append({"w": key[0], "p": key[1], "promised": promised,
                        "t": grant.limit.give_back(tat, now, grant.unused)})
    if changes:
        session.execute(_SAVE, changes)
