"""Several outbox rows in one bus message.

Most of what the bus carries are facts (8 of a sign-up journey's ~11 messages), and each
message costs the relay and the consumer their own publish, PubAck, fetch and ack. So a relay
packs a round's rows of one subject (one topic, workspace and partition: the rows that one
consumer reads in order anyway) into one message, at most ``CJO_BUS_PACK_ROWS`` rows and
:data:`MAX_PACK_BYTES`, in id order; the consumer unpacks it into the rows again, each with its
own traceparent, and answers each row on its own (a refused row goes to the dead letters alone;
the message is acked once each of its rows is taken or buried).

A packed message carries :data:`PACK_HEADER` and a MessagePack array of ``[payload,
traceparent]`` pairs. A message without the header is one row, as every release before packing
published (and a relay still publishes a round's single row of a subject): a consumer reads
both, so messages of a previous release left in a stream are still consumed. A consumer of a
previous release cannot read packed messages (it buries one whole): ``CJO_BUS_PACK_ROWS`` is 1
by default in this release and is raised once every service runs it; a pack buried whole
anyway is replayed as its rows (:func:`packed_letter`).

**De-duplication.** A packed message's ``Nats-Msg-Id`` is derived from its rows (producer,
topic, first row, count, the last row's creation time and a digest of every row's id), so the
same rows published again after a crash between the PubAck and their deletion are dropped by the
stream's duplicate window. A relay that restarts may claim the rows with others (more rows
came, another batch boundary) and pack them differently: that message has another id and is
stored, and its rows reach the receiver a second time, which drops them by its own ids (fact
ids, event ids) as it does for any row published again past the duplicate window.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from cjo_platform.bus import naming
from cjo_platform.db.outbox import OutboxRow

# Marks a packed message; its value is the format's version.
PACK_HEADER = "Cjo-Pack"
PACK_FORMAT = "1"
# The most rows one message may carry (CJO_BUS_PACK_ROWS' bound); also the room a consumer
# leaves between two stream sequences when it numbers a message's rows (see row_id).
MAX_PACK_ROWS = 1000
# A packed message's payload bound, well under NATS' default max_payload (1 MiB).
MAX_PACK_BYTES = 256 * 1024

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[tuple[bytes, str]]).decode


def packs(rows: Sequence[OutboxRow], indexes: Sequence[int], limit: int) -> list[list[int]]:
    """``indexes`` (of ``rows``, in order) cut into runs of at most ``limit`` rows and
    :data:`MAX_PACK_BYTES` of payload (a larger row alone)."""
    runs: list[list[int]] = []
    size = 0
    for index in indexes:
        length = len(rows[index].payload) + len(rows[index].traceparent) + 8
        if not runs or len(runs[-1]) >= limit or size + length > MAX_PACK_BYTES:
            runs.append([])
            size = 0
        runs[-1].append(index)
        size += length
    return runs


def pack(rows: Sequence[OutboxRow]) -> bytes:
    return _encode([(row.payload, row.traceparent) for row in rows])


def pack_message_id(producer: str, topic: str, rows: Sequence[OutboxRow]) -> str:
    """The ``Nats-Msg-Id`` of a packed message: the same for the same rows, different for any
    other set. It names the first row as a single row's id does (its id and creation time:
    SQLite reuses the ids of an emptied outbox), the last row's creation time and a digest of
    every row's id."""
    ids = ",".join([str(row.id) for row in rows]).encode()
    digest = hashlib.blake2b(ids, digest_size=12).hexdigest()
    first = naming.message_id(producer, topic, rows[0].id, rows[0].create_time)
    return f"{first}+{len(rows)}:{rows[-1].create_time.timestamp():.6f}:{digest}"


@dataclass(frozen=True)
class Unpacked:
    """A packed message's rows: (payload, traceparent) each, or why it could not be read."""

    rows: list[tuple[bytes, str]]
    error: str = ""


def unpack(data: bytes) -> Unpacked:
    try:
        rows = _decode(data)
    except (msgspec.DecodeError, ValueError) as exc:
        return Unpacked([], f"unreadable packed message: {exc}")
    if not rows or len(rows) > MAX_PACK_ROWS:
        return Unpacked([], f"a packed message of {len(rows)} rows")
    return Unpacked(rows)


_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


def packed_letter(payload: bytes) -> list[tuple[bytes, str]] | None:
    """The rows of a dead letter that holds a whole packed message, else None. A consumer of the
    release before packing read a packed message as one row and kept its bytes, without the
    header, as a letter; replayed, it must reach the receiver as its rows. Told apart from a
    row's own payload (protobuf) by its form alone: exactly a MessagePack array of ``[bytes,
    traceparent]`` pairs, each traceparent empty or W3C's."""
    if not payload or payload[0] not in _ARRAY_FIRST_BYTES:
        return None
    unpacked = unpack(payload)
    if not unpacked.rows or not all(
            not traceparent or _TRACEPARENT.fullmatch(traceparent)
            for _, traceparent in unpacked.rows):
        return None
    return unpacked.rows


# MessagePack's fixarray (1-15 items), array 16 and array 32.
_ARRAY_FIRST_BYTES = frozenset([*range(0x91, 0xA0), 0xDC, 0xDD])


def row_id(sequence: int, index: int) -> int:
    """The id a consumer gives the ``index``-th row of the message at stream ``sequence``
    (unique across messages; a single-row message's row is ``index`` 0)."""
    return sequence * (MAX_PACK_ROWS + 1) + index


def sequence_of(row_id_: int) -> int:
    return row_id_ // (MAX_PACK_ROWS + 1)
