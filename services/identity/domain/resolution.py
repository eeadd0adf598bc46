"""Identity resolution: which profile an event's identifiers point to.

The strongest known identifier decides (user_id > email > phone > device_id > anonymous_id), and
the event's identifiers nobody owns yet are linked to that profile. An identifier already owned
by ANOTHER profile is a sign the two profiles are one person; merging them (moving identifiers,
events and traits, and telling orchestration) is issue 3. Until then such identifiers stay with
their owner and are reported as conflicts: silently relinking would split a person's history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cjo_identity.domain.identifiers import Identifier


@dataclass(frozen=True)
class Resolution:
    profile_id: str | None  # None: nobody is known, a new profile is needed
    link: tuple[Identifier, ...]  # identifiers to attach to the profile
    conflicts: tuple[Identifier, ...]  # owned by another profile; left alone until merging


def resolve(identifiers: Sequence[Identifier], owners: Mapping[Identifier, str]) -> Resolution:
    unknown = tuple(i for i in identifiers if i not in owners)
    known = [i for i in identifiers if i in owners]
    if not known:
        return Resolution(None, unknown, ())
    # min() keeps the first of equally strong identifiers, so the event's order breaks ties.
    profile_id = owners[min(known, key=lambda i: i.priority)]
    conflicts = tuple(i for i in known if owners[i] != profile_id)
    return Resolution(profile_id, unknown, conflicts)
