"""The golden record of one person."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.traits import Trait


@dataclass(frozen=True)
class Profile:
    profile_id: str
    identifiers: tuple[Identifier, ...]
    traits: dict[str, Trait]
    create_time: datetime
    update_time: datetime
