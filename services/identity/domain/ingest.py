"""Applying a batch of events to the identity graph and the profiles, in memory.

The adapter loads what the batch touches (earlier events with the same message ids, the owners
of its identifiers, the traits of those profiles) in a few queries, this module decides
everything, and the adapter writes the result in bulk. Events are applied in request order, so
an identify call later in a batch sees the profile an earlier event created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cjo_identity.domain.events import Event
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.resolution import resolve
from cjo_identity.domain.traits import Trait, Traits, apply_traits, trait_values


@dataclass(frozen=True)
class Outcome:
    """What became of one event of the batch."""

    event_id: str
    profile_id: str
    duplicate: bool = False


@dataclass(frozen=True)
class Accepted:
    """An event applied by this batch, to store and forward."""

    event_id: str
    profile_id: str
    event: Event
    profile_traits: dict[str, Any]  # the profile's traits right after this event


@dataclass
class BatchPlan:
    outcomes: list[Outcome] = field(default_factory=list)  # one per event, in order
    accepted: list[Accepted] = field(default_factory=list)
    new_profiles: set[str] = field(default_factory=set)
    # Existing profiles that gained traits or identifiers; the others need no write.
    changed_profiles: set[str] = field(default_factory=set)
    traits: dict[str, dict[str, Trait]] = field(default_factory=dict)  # per profile, after
    links: dict[Identifier, str] = field(default_factory=dict)  # new identifier -> profile
    conflicts: list[tuple[Identifier, str, str]] = field(default_factory=list)
    """(identifier, its owner, the profile the event went to): merges for issue 3."""


def plan_batch(events: Sequence[Event], *, seen: Mapping[str, Outcome],
               owners: Mapping[Identifier, str], traits: Mapping[str, Traits],
               new_id: Callable[[], str]) -> BatchPlan:
    """Decide the outcome of each event.

    ``seen``: outcomes of message ids ingested before; ``owners``: the profile of each known
    identifier; ``traits``: the current traits of those profiles.
    """
    plan = BatchPlan()
    seen = dict(seen)
    owners = dict(owners)
    for event in events:
        earlier = seen.get(event.message_id)
        if earlier is not None:
            plan.outcomes.append(Outcome(earlier.event_id, earlier.profile_id, duplicate=True))
            continue
        resolution = resolve(event.identifiers, owners)
        profile_id = resolution.profile_id
        if profile_id is None:
            profile_id = new_id()
            plan.new_profiles.add(profile_id)
        for identifier in resolution.link:
            owners[identifier] = plan.links[identifier] = profile_id
        plan.conflicts.extend((i, owners[i], profile_id) for i in resolution.conflicts)

        before = plan.traits.get(profile_id, traits.get(profile_id, {}))
        after = apply_traits(before, event.traits, event.timestamp)
        plan.traits[profile_id] = after
        if profile_id not in plan.new_profiles and (after != before or resolution.link):
            plan.changed_profiles.add(profile_id)

        outcome = Outcome(new_id(), profile_id)
        seen[event.message_id] = outcome
        plan.outcomes.append(outcome)
        plan.accepted.append(Accepted(outcome.event_id, profile_id, event,
                                      trait_values(plan.traits[profile_id])))
    return plan
