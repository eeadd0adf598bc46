"""Streams, subjects and consumers of the bus, and the partition of a row.

One stream per topic (``CJO_ORCHESTRATION_EVENTS`` for the topic ``orchestration.events``) whose
subjects are ``<prefix>.<topic>.<workspace>.<partition>``: an operator can read one workspace's
traffic (``cjo.orchestration.events.acme.*``), and a consumer reads one partition of every
workspace (``cjo.orchestration.events.*.3``). The partition is a stable hash (CRC-32, the same in
every process and release) of the row's ordering key, the profile id where the topic has one, mod
the number of partitions: a profile's events always share a subject, so one consumer sees them in
order.
"""

from __future__ import annotations

import re
import zlib
from datetime import datetime

# A subject token may hold neither '.', '*', '>' nor white space; workspace ids are short
# slugs, so they pass as they are, and anything else is carried hex-encoded (never ambiguous:
# a slug holds no '~').
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_NAME = re.compile(r"[^A-Za-z0-9_-]")


def token(value: str) -> str:
    """``value`` as one subject token."""
    return value if _TOKEN.fullmatch(value) else "~" + value.encode().hex()


def stream_name(prefix: str, topic: str) -> str:
    return _NAME.sub("_", f"{prefix}_{topic}").upper()


def subject_root(prefix: str, topic: str) -> str:
    return f"{prefix}.{topic}"


def subject(prefix: str, topic: str, workspace_id: str, partition: int) -> str:
    return f"{subject_root(prefix, topic)}.{token(workspace_id)}.{partition}"


def partition_filter(prefix: str, topic: str, partition: int) -> str:
    """The subjects of one partition, in every workspace."""
    return f"{subject_root(prefix, topic)}.*.{partition}"


def consumer_name(topic: str, partition: int) -> str:
    return _NAME.sub("_", f"{topic}-p{partition}")


def partition_of(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


def message_id(producer: str, topic: str, row_id: int, create_time: datetime) -> str:
    """The ``Nats-Msg-Id`` of an outbox row: stable across re-publishes of the row (after a
    crash between the PubAck and the row's deletion), unique across producers and topics. The
    row's creation time is part of it because SQLite reuses the ids of deleted rows (an emptied
    outbox starts again at 1), and a reused id within the duplicate window would be dropped."""
    return f"{producer}:{topic}:{row_id}:{create_time.timestamp():.6f}"
