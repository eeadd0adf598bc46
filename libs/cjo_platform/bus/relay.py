"""The outbox relay: a :class:`~cjo_platform.db.outbox.Forwarder` whose ``send`` publishes to
JetStream instead of calling the receiver.

Everything else is the forwarder's: rows are claimed with a lease, sent in id order per
workspace, and deleted only once sent, which here means once JetStream's PubAck says the stream
stored them. Each message carries ``Nats-Msg-Id`` = producer + topic + row id (+ its creation
time: SQLite reuses the ids of deleted rows), so a row published
again after a crash between the PubAck and its deletion is dropped by the stream's duplicate
window: at least once from the outbox, once in the stream.

**Pipelined, in order per key.** A round's rows are published without waiting for each PubAck
in turn: the rows of one ordering key (the profile) form a chain, and the first row of every
chain is in flight at once, then the second of every chain that has one, and so on. A key's
next row goes only after its previous one was stored, because a pipeline on one connection
does not keep order on failure: a publish lost in a reconnect, or sent to a stream leader that
just stepped down, fails while the ones behind it are stored, and sent again it would land
after them. So a key whose row failed sends nothing more this round, no row behind the first
failure (in id order) is sent any more, and the forwarder is told that the rows from the first
failed one on are still to send: it deletes the ones before and keeps that one and every row
behind it for later. Kept rows that were stored anyway (other keys' rows of the same waves) are
dropped as duplicates when they are published again (past the duplicate window, the receiver
drops them by its own ids). When the very first row fails the round stops, every row kept
(the bus is down, most likely). The forwarder's claim bounds what is in flight (a batch of
rows, a few megabytes).

**A message that can never be published** (larger than the server's ``max_payload``,
headers included, or a subject or header the client refuses) is its rows' own failure, not the
bus's: its rows are refused for good (:class:`~cjo_platform.db.outbox.Refusal`, certain), so the
forwarder moves them to the dead letters at once, as it does with a row a receiver refused, and
its chain goes on as if it had been stored. Publishing it again could never succeed, and
treating it as an outage would stop the topic for every workspace for ever. (A message the
stream refuses, its ``max_msg_size`` or a full stream, is a setting of the deployment: kept and
retried as above.)

**Packed.** With ``CJO_BUS_PACK_ROWS`` above 1 a round's rows of one subject form one chain and
go as a few messages of many rows each (:mod:`cjo_platform.bus.packing`): a message is stored
whole or not at all, so the rules above hold with "message" for "row", a failed message's first
row being where the kept rows begin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nats.errors import BadHeaderError, BadSubjectError, MaxPayloadError

from cjo_platform.bus import naming, packing
from cjo_platform.bus.connection import Bus
from cjo_platform.db.outbox import OutboxRow, Refusal, SendBatch

WORKSPACE_HEADER = "Cjo-Workspace"
TRACEPARENT_HEADER = "traceparent"
MSG_ID_HEADER = "Nats-Msg-Id"
# The stream the message must land in (JetStream refuses it otherwise).
EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"

# How long a publish may wait for its PubAck before it counts as failed (it may still have
# been stored: published again, it is dropped as a duplicate).
PUBLISH_TIMEOUT_SECONDS = 5.0

# What a publish raises when the message itself can never be published (however often tried).
_NEVER_PUBLISHABLE = (MaxPayloadError, BadSubjectError, BadHeaderError)


def bus_sender(bus: Bus, producer: str, topic: str,
               ordering_key: Callable[[OutboxRow], str] | None = None) -> SendBatch:
    """A forwarder's ``send`` publishing ``topic``'s rows. ``ordering_key(row)`` picks the
    partition (the profile id where the payload has one) and the chain of rows published one
    after another; without it, or when it cannot read the row, a workspace's rows share one
    partition and one chain."""

    async def send(workspace_id: str, rows: Sequence[OutboxRow]) -> list[Refusal]:
        stream = await bus.ensure_stream(topic)
        pub_acks = await bus.pub_acks()
        # The server's limit on a message, headers included (nats-py checks the payload only;
        # the server closes the connection of a client that sends more).
        max_payload = pub_acks.nc.max_payload
        partitions = bus.settings.partitions
        pack_rows = bus.settings.pack_rows
        # Each chain's messages, in order: one row each, or with packing a subject's rows cut
        # into packs (every profile of a subject in one chain: its rows stay in id order).
        keyed: dict[str, list[int]] = {}
        subjects: list[str] = []
        # The workspace's subject of each partition the round touches, made once a round.
        subject_of: dict[int, str] = {}
        for index, row in enumerate(rows):
            key = workspace_id
            if ordering_key is not None:
                try:
                    key = ordering_key(row) or workspace_id
                except Exception:  # an unreadable payload still goes: the receiver judges it
                    key = workspace_id
            partition = naming.partition_of(key, partitions)
            subject = subject_of.get(partition)
            if subject is None:
                subject = subject_of[partition] = naming.subject(bus.prefix, topic,
                                                                 workspace_id, partition)
            subjects.append(subject)
            keyed.setdefault(subject if pack_rows > 1 else key, []).append(index)
        chains = [packing.packs(rows, indexes, pack_rows) for indexes in keyed.values()]
        # The first row not stored (its index), and why.
        failed: int = len(rows)
        error: BaseException | None = None
        # The rows of messages that can never be published (their indexes), and why.
        never: dict[int, str] = {}
        live = chains
        step = 0
        while live:
            wave = pub_acks.wave()
            sent: list[list[int]] = []
            # The first rows of this wave's messages that can never be published.
            buried: set[int] = set()
            try:
                for message in (chain[step] for chain in live):
                    first = rows[message[0]]
                    headers = {WORKSPACE_HEADER: workspace_id, EXPECTED_STREAM_HEADER: stream}
                    if len(message) == 1:
                        headers[MSG_ID_HEADER] = naming.message_id(producer, topic, first.id,
                                                                   first.create_time)
                        if first.traceparent:
                            headers[TRACEPARENT_HEADER] = first.traceparent
                        payload = first.payload
                    else:
                        packed = [rows[index] for index in message]
                        headers[MSG_ID_HEADER] = packing.pack_message_id(producer, topic,
                                                                         packed)
                        headers[packing.PACK_HEADER] = packing.PACK_FORMAT
                        payload = packing.pack(packed)
                    try:
                        size = _wire_size(payload, headers)
                        if size > max_payload:
                            raise MaxPayloadError
                        await wave.publish(message[0], subjects[message[0]], payload, headers)
                        sent.append(message)
                    except _NEVER_PUBLISHABLE as exc:
                        buried.add(message[0])
                        reason = (f"{size:,} bytes, more than the bus's max_payload "
                                  f"({max_payload:,})" if isinstance(exc, MaxPayloadError)
                                  else repr(exc))
                        for index in message:
                            never[index] = f"can never be published to {stream}: {reason}"
                    except Exception as exc:  # not even sent (connection closed)
                        if message[0] < failed:
                            failed, error = message[0], exc
                answers = await wave.wait(PUBLISH_TIMEOUT_SECONDS)
            finally:
                wave.close()  # unanswered (or the round was cancelled): forgotten
            # A chain goes on past a message that can never be published: it is not waited for.
            stored = set(buried)
            for message in sent:
                index = message[0]
                problem = answers[index] if index in answers else TimeoutError(
                    f"no PubAck within {PUBLISH_TIMEOUT_SECONDS}s")
                if problem is None:
                    stored.add(index)
                elif index < failed:
                    failed, error = index, problem
            step += 1
            # A chain whose message failed stops: its next message would be stored before it.
            # Rows behind the first failure stay in the outbox anyway: not sent now.
            live = [chain for chain in live if chain[step - 1][0] in stored
                    and len(chain) > step and chain[step][0] < failed]
        # Refused for good (the dead letters): those before the first row kept.
        refused = [Refusal(rows[index], reason) for index, reason in never.items()
                   if index < failed]
        if error is None:
            return refused
        if failed == 0:
            raise error  # the round stops and every row is kept
        # The rows before went: keep this one and the rows behind it for later.
        return [*refused, Refusal(rows[failed], f"publishing to {stream} failed: {error!r}",
                                  transient=True)]

    return send


def _wire_size(payload: bytes, headers: dict[str, str]) -> int:
    """What the server counts against its ``max_payload``: the payload and the headers as
    nats-py writes them (``NATS/1.0``, a ``key: value`` line each, an empty line)."""
    return len(payload) + 12 + sum(len(k) + len(v.encode()) + 4 for k, v in headers.items())
