"""Backfills: a definition applied to every existing profile of a workspace in the background.

Creating a segment, changing its condition, or adding or changing computed traits records a
backfill and returns; the time worker scans the workspace's profiles by id, a chunk per
transaction, and stores its cursor with each chunk, so a restart resumes where it stopped. A
newer change of the same definition replaces the backfill (the scan starts over); a chunk of the
older one is then not written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cjo_identity.domain.computed import ComputedTrait

COMPUTED_TRAITS = "computed_traits"
SEGMENT_PREFIX = "segments/"


class BackfillState(StrEnum):
    PENDING = "pending"  # recorded; no worker has started it
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # too many chunks failed in a row; a new definition starts it over


@dataclass(frozen=True)
class Backfill:
    workspace_id: str
    target: str  # "segments/<id>" or COMPUTED_TRAITS
    definition: str  # the condition, or computed_digest() of the definitions
    state: BackfillState
    create_time: datetime
    cursor: str = ""  # the last profile id scanned
    profiles_scanned: int = 0
    profiles_total: int = 0  # the workspace's profiles when the scan started (an estimate)
    start_time: datetime | None = None
    end_time: datetime | None = None
    attempts: int = 0  # failed chunks since the last one that succeeded
    last_error: str = ""

    @property
    def segment_id(self) -> str | None:
        return self.target.removeprefix(SEGMENT_PREFIX) \
            if self.target.startswith(SEGMENT_PREFIX) else None


def segment_target(segment_id: str) -> str:
    return f"{SEGMENT_PREFIX}{segment_id}"


def computed_digest(definitions: Sequence[ComputedTrait]) -> str:
    """Identifies a set of computed-trait definitions: equal definitions, equal digest."""
    document = [[d.name, d.aggregation.value, d.event_name, d.property,
                 d.window.total_seconds() if d.window else None] for d in definitions]
    return hashlib.sha256(json.dumps(document).encode()).hexdigest()
