"""The golden record of one person."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cjo_identity.domain.golden import Golden
from cjo_identity.domain.identifiers import Identifier
from cjo_identity.domain.ingest import Merge


@dataclass(frozen=True)
class MergeRecord:
    merge: Merge
    time: datetime


@dataclass(frozen=True)
class Profile:
    profile_id: str
    identifiers: tuple[Identifier, ...]
    golden: Golden
    create_time: datetime
    update_time: datetime
    merged_from: tuple[MergeRecord, ...] = ()
    computed: dict[str, Any] = field(default_factory=dict)
    segments: tuple[str, ...] = ()
