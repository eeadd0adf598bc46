"""Identifier rules shared by services that name the same resource, and the id of a claimant.

A segment id is chosen by the user in identity (CreateSegment) and named by orchestration's
segment and scheduled triggers: both check it with the one rule here, so a journey can never be
published naming a segment id identity would refuse (and answer INVALID_ARGUMENT for, forever).
"""

from __future__ import annotations

import os
import re
import socket
import uuid

SEGMENT_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SEGMENT_ID_RULE = ("must be 1 to 63 lower-case letters, digits or dashes, starting and ending "
                   "with a letter or digit")


def is_segment_id(value: str) -> bool:
    return SEGMENT_ID.fullmatch(value) is not None


def claimant_id() -> str:
    """A new id for one holder of leases or claims (an outbox forwarder, a bus consumer):
    ``<host>-<pid>-<random>``, so an operator sees which pod and process holds a row or a
    partition, and two holders in one process never pass for each other. At most 51
    characters of letters, digits, ``-``, ``_`` and ``.`` (a host name's), which fit a
    ``lease_owner`` column and a JetStream key-value key."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()[:30])
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
