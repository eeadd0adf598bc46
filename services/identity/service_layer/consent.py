"""Consent: may a profile be reached on a channel (and topic)? Delivery asks before sends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cjo_identity.adapters import profiles
from cjo_identity.adapters.settings import load_rules
from cjo_identity.domain.consent import Decision, decide
from cjo_platform.db.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class ConsentQuery:
    profile_id: str  # a merged-away id is answered for its survivor
    channel: str
    topic: str = ""


def check_consent(uow: UnitOfWork, workspace_id: str, queries: Sequence[ConsentQuery]
                  ) -> list[Decision]:
    """One decision per query, in order; an unknown profile is never allowed."""
    settings = load_rules(uow.session, workspace_id)
    resolved, records = profiles.following_merges(
        uow.session, workspace_id, [q.profile_id for q in queries], profiles.consents_of)
    return [decide(records.get(resolved[q.profile_id]), q.channel, q.topic, settings)
            for q in queries]
