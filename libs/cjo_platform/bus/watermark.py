"""Forwarding watermarks over the bus: a producer's **markers**, and when a row was written.

Over gRPC a producer reports how far its outbox has been delivered straight to the receiver
(RecordForwardingWatermark). Over the bus its outbox drains into JetStream, so what the outbox
says is only what was *published*. So the producer, after reading its outbox's watermark
*W* (every row written before *W*, but in the workspaces listed behind, was PubAcked and
deleted), publishes a marker carrying *W* and that list to every partition of the topic: each
marker is stored after those rows in its partition. The consumer applies a marker only after
every earlier message of its partition was answered, adding the workspaces whose messages it
still keeps (the receiver wants them later) or sent round the stream, each with its oldest
waiting row's write time (:func:`written_at`), and hands it to its watermark callback
(:class:`cjo_platform.bus.consumer.BusConsumer`): the receiver folds the partitions' markers
into one watermark (the minimum over every partition, none until each has reported).

A partition holds **at most one marker waiting** (:func:`publish_markers`): a marker is stored
only while none of its partition is (the stream checks it, :data:`_NONE_WAITING`), so a
consumer stopped for a day finds one marker per partition, not one per report and producer
replica (review rbusmark: ~415,000). A report skipped there only lets the watermark lag, by the
time the consumer takes to reach the marker waiting. A consumer that takes several markers at
once passes on only the latest (:func:`latest`).

A marker's subject is its partition's under the workspace token ``~watermark``, which
:func:`cjo_platform.bus.naming.token` hex-encodes as it does any id that is not a slug:
``<prefix>.<topic>.~7e77617465726d61726b.<partition>`` (workspace ids are slugs, so none
shares it); it carries :data:`MARKER_HEADER` and no workspace header.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.js.errors import BadRequestError

from cjo_platform.bus import naming
from cjo_platform.bus.connection import Bus

MARKER_HEADER = "Cjo-Watermark"
MARKER_TOKEN = "~watermark"
# On a copy a consumer sends round the stream (which drops the original's Nats-Msg-Id, else the
# stream would drop the copy): the original row's write time, as epoch seconds.
WRITTEN_HEADER = "Cjo-Written"
MSG_ID_HEADER = "Nats-Msg-Id"
# A marker is stored only while its partition holds none (see the module).
_NONE_WAITING = {"Nats-Expected-Last-Subject-Sequence": "0"}
# JetStream's error code for a publish whose expected last subject sequence is not the stream's.
_WRONG_LAST_SEQUENCE = 10071
# The first row's write time in a relay's Nats-Msg-Id (see naming.message_id and
# packing.pack_message_id): "<producer>:<topic>:<row id>:<epoch seconds>[+<pack's rest>]".
_MSG_ID_WRITTEN = re.compile(r"^.*:\d+:(\d+\.\d+)(?:\+.*)?$")


@dataclass(frozen=True)
class Marker:
    """Every row written before ``delivered_before`` is before the marker in its partition,
    but in the ``behind`` workspaces: there only those written before their own time."""

    delivered_before: datetime
    behind: Mapping[str, datetime]


def latest(kept: Marker | None, found: Marker) -> Marker:
    """The one marker to pass on of two a consumer took (``kept`` before ``found``), both
    behind every message it has tried: the one of the later watermark (a whole report of the
    producer's outbox, as the other; a receiver would ignore the older one after it anyway);
    of two of the same watermark, both (each workspace behind at the earlier of its times)."""
    if kept is None or found.delivered_before > kept.delivered_before:
        return found
    if found.delivered_before < kept.delivered_before:
        return kept
    behind = dict(kept.behind)
    for workspace_id, time in found.behind.items():
        behind[workspace_id] = min(time, behind.get(workspace_id, time))
    return Marker(kept.delivered_before, behind)


def is_marker(msg: Msg) -> bool:
    return MARKER_HEADER in (msg.headers or {})


def encode(delivered_before: datetime, behind: Sequence[tuple[str, datetime]]) -> bytes:
    return json.dumps({"delivered_before": delivered_before.timestamp(),
                       "behind": {workspace_id: time.timestamp()
                                  for workspace_id, time in behind}}).encode()


def decode(data: bytes) -> Marker:
    """The marker ``data`` carries; ValueError when it cannot be read."""
    try:
        record = json.loads(data)
        behind: dict[str, datetime] = {}
        for workspace_id, time in dict(record.get("behind") or {}).items():
            moment = _moment(time)
            behind[str(workspace_id)] = min(moment, behind.get(str(workspace_id), moment))
        return Marker(_moment(record["delivered_before"]), behind)
    except (KeyError, TypeError, AttributeError, OverflowError) as exc:
        raise ValueError(f"unreadable watermark marker: {exc!r}") from exc


def _moment(value: object) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a time: {value!r}")
    return datetime.fromtimestamp(value, UTC)


async def publish_markers(bus: Bus, topic: str, delivered_before: datetime,
                          behind: Sequence[tuple[str, datetime]]) -> int:
    """Publish a marker to every partition of ``topic`` that holds none waiting (see the
    module) and wait for each PubAck; returns how many were stored. Raises when one fails
    otherwise: the next report publishes them all again."""
    stream = await bus.ensure_stream(topic)
    js = await bus.jetstream()
    payload = encode(delivered_before, behind)
    headers = {MARKER_HEADER: "1", "Nats-Expected-Stream": stream, **_NONE_WAITING}

    async def publish(partition: int) -> int:
        try:
            await js.publish(naming.subject(bus.prefix, topic, MARKER_TOKEN, partition),
                             payload, headers=headers)
        except BadRequestError as exc:
            if exc.err_code != _WRONG_LAST_SEQUENCE:
                raise
            return 0  # the partition's consumer has not taken the last one yet
        return 1

    return sum(await asyncio.gather(*(publish(partition)
                                      for partition in range(bus.settings.partitions))))


def written_at(msg: Msg, stored: datetime) -> datetime:
    """When the (first) row of ``msg`` was written to its producer's outbox, by the producer's
    clock (as its watermark is): from :data:`WRITTEN_HEADER` on a copy sent round, else from
    the relay's ``Nats-Msg-Id``; a message with neither (a copy sent round by a release before
    markers) counts as written when the stream ``stored`` it."""
    headers = msg.headers or {}
    value = headers.get(WRITTEN_HEADER, "")
    if not value:
        found = _MSG_ID_WRITTEN.match(headers.get(MSG_ID_HEADER, ""))
        value = found.group(1) if found else ""
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError):
        return stored
