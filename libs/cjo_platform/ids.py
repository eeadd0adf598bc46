"""Identifier rules shared by services that name the same resource.

A segment id is chosen by the user in identity (CreateSegment) and named by orchestration's
segment and scheduled triggers: both check it with the one rule here, so a journey can never be
published naming a segment id identity would refuse (and answer INVALID_ARGUMENT for, forever).
"""

from __future__ import annotations

import re

SEGMENT_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SEGMENT_ID_RULE = ("must be 1 to 63 lower-case letters, digits or dashes, starting and ending "
                   "with a letter or digit")


def is_segment_id(value: str) -> bool:
    return SEGMENT_ID.fullmatch(value) is not None
