"""The outbox relay: a :class:`~cjo_platform.db.outbox.Forwarder` whose ``send`` publishes to
JetStream instead of calling the receiver.

Everything else is the forwarder's: rows are claimed with a lease, sent in id order per
workspace, and deleted only once sent, which here means once JetStream's PubAck says the stream
stored them. Each message carries ``Nats-Msg-Id`` = producer + topic + row id (+ its creation
time: SQLite reuses the ids of deleted rows), so a row published
again after a crash between the PubAck and its deletion is dropped by the stream's duplicate
window: at least once from the outbox, once in the stream. Rows are published one after another
and the first that fails stops the workspace's rows (they are held, with backoff): a row is never
stored after the ones behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cjo_platform.bus import naming
from cjo_platform.bus.connection import Bus
from cjo_platform.db.outbox import OutboxRow, Refusal, SendBatch

WORKSPACE_HEADER = "Cjo-Workspace"
TRACEPARENT_HEADER = "traceparent"
MSG_ID_HEADER = "Nats-Msg-Id"


def bus_sender(bus: Bus, producer: str, topic: str,
               ordering_key: Callable[[OutboxRow], str] | None = None) -> SendBatch:
    """A forwarder's ``send`` publishing ``topic``'s rows. ``ordering_key(row)`` picks the
    partition (the profile id where the payload has one); without it, or when it cannot read
    the row, a workspace's rows share one partition."""

    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        stream = await bus.ensure_stream(topic)
        js = await bus.jetstream()
        partitions = bus.settings.partitions
        for index, row in enumerate(rows):
            key = workspace_id
            if ordering_key is not None:
                try:
                    key = ordering_key(row) or workspace_id
                except Exception:  # an unreadable payload still goes: the receiver judges it
                    key = workspace_id
            headers = {MSG_ID_HEADER: naming.message_id(producer, topic, row.id, row.create_time),
                       WORKSPACE_HEADER: workspace_id}
            if row.traceparent:
                headers[TRACEPARENT_HEADER] = row.traceparent
            subject = naming.subject(bus.prefix, topic, workspace_id,
                                     naming.partition_of(key, partitions))
            try:
                await js.publish(subject, row.payload, stream=stream, headers=headers)
            except Exception as exc:
                if index == 0:
                    raise  # nothing went: the round stops and every row is kept
                # The rows before went: keep this one and the rows behind it for later.
                return [Refusal(row, f"publishing to {stream} failed: {exc!r}",
                                transient=True)]
        return []

    return send
