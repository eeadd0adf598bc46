"""``cjo.common.v1.DeadLetterService``, written once: every service registers it with its own
dead-letter table and one replay per source (``source -> replay(uow, letters)``), which puts the
letters back where they came from in the unit of work that removes them from the list.

    servicer = dead_letter_servicer(storage.transactions, storage.dead_letters,
                                    outbox_replays(events_forwarder, facts_forwarder))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import grpc

from cjo.common.v1 import dead_letter_service_pb2 as pb
from cjo.common.v1 import dead_letter_service_pb2_grpc as pb_grpc
from cjo_platform.bus.packing import packed_letter
from cjo_platform.db.dead_letters import DeadLetter, DeadLetters
from cjo_platform.db.outbox import Forwarder
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.limits import MAX_CALL_PAYLOAD_BYTES
from cjo_platform.paging import MAX_PAGE_SIZE, decode_token, encode_token, page_size
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.idempotent import once
from cjo_platform.rpc.server import Servicer

SERVICE = "cjo.common.v1.DeadLetterService"

Replay = Callable[[UnitOfWork, Sequence[DeadLetter]], None]
"""Puts letters (all of one workspace and one source, oldest first) back for processing."""


def to_outbox(topic: str) -> Replay:
    """The replay of an outbox topic's letters: queued again, so its forwarder sends them."""

    def replay(uow: UnitOfWork, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            uow.publish(topic, letter.workspace_id, [(letter.payload, letter.traceparent)])

    return replay


def outbox_replays(*forwarders: Forwarder) -> dict[str, Replay]:
    """One replay per forwarder, under the source its dead letters carry."""
    return {forwarder.name: to_outbox(forwarder.topic) for forwarder in forwarders}


class Redelivering(Protocol):
    """A bus consumer, as far as its replays go (:class:`cjo_platform.bus.consumer.BusConsumer`)."""

    @property
    def name(self) -> str: ...

    @property
    def redelivery_topic(self) -> str: ...


def to_redelivery(topic: str) -> Replay:
    """The replay of a bus consumer's letters: queued under its redelivery ``topic``, a letter
    holding a whole packed message (kept so by a consumer of the release before packing) as
    each of its rows."""

    def replay(uow: UnitOfWork, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            rows = packed_letter(letter.payload)
            uow.publish(topic, letter.workspace_id,
                        rows if rows is not None else [(letter.payload, letter.traceparent)])

    return replay


def bus_replays(*consumers: Redelivering) -> dict[str, Replay]:
    """The replays of bus consumers' letters: queued under each consumer's redelivery topic in
    the service's outbox, whose forwarder (``consumer.redelivery(outbox)``, run by the service)
    hands them to the consumer's receiver. Letters that forwarder gave up on replay the same
    way."""
    replays: dict[str, Replay] = {}
    for consumer in consumers:
        replay = to_redelivery(consumer.redelivery_topic)
        replays[consumer.name] = replay
        replays[f"outbox:{consumer.redelivery_topic}"] = replay
    return replays


def dead_letter_servicer(transactions: Transactions, dead_letters: DeadLetters,
                         replays: Mapping[str, Replay], domain: str) -> Servicer:
    """The service's DeadLetterService, ready for :class:`ServiceApp`'s servicers."""
    return Servicer(DeadLetterServicer(transactions, dead_letters, replays, domain),
                    pb_grpc.add_DeadLetterServiceServicer_to_server, SERVICE)


def _selection(ids: Sequence[int], all_: bool, source: str,
               replays: Mapping[str, Replay] | None) -> list[int] | None:
    problems = Violations()
    if all_ == bool(ids):
        problems.add("ids", "set either ids or all")
    if len(ids) > MAX_PAGE_SIZE:
        problems.add("ids", f"must hold at most {MAX_PAGE_SIZE} ids, got {len(ids)}")
    for index, letter_id in enumerate(ids):
        problems.check(letter_id > 0, f"ids[{index}]", "must be a positive letter id")
    if replays is not None and source and source not in replays:
        problems.add("source", f"is not a source of this service (one of: "
                               f"{', '.join(sorted(replays))})")
    problems.raise_if_any()
    return None if all_ else list(ids)


class DeadLetterServicer(pb_grpc.DeadLetterServiceServicer):
    def __init__(self, transactions: Transactions, dead_letters: DeadLetters,
                 replays: Mapping[str, Replay], domain: str) -> None:
        self.transactions = transactions
        self.dead_letters = dead_letters
        self.replays = dict(replays)
        self.domain = domain

    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest,
                              context: grpc.aio.ServicerContext) -> pb.ListDeadLettersResponse:
        size = page_size(request.page_size)
        cursor = decode_token(request.page_token)
        after = 0
        if cursor is not None:
            last = cursor.get("after")
            if not isinstance(last, int) or isinstance(last, bool) or not 0 <= last < 2**63:
                raise InvalidArgument.one("page_token", "is not a token returned by this method")
            after = last
            if cursor.get("source", "") != request.source:
                raise InvalidArgument.one("page_token",
                                          "belongs to a listing of another source")
        workspace = current_workspace()
        # Payloads of MAX_CALL_PAYLOAD_BYTES at most a page (one letter at least): a page of
        # large rows (buried because they were too large) must still fit one gRPC answer, and
        # only the payloads answered are read.
        page = await self.transactions.run(lambda uow: self.dead_letters.page(
            uow.session, workspace, request.source or None, after_id=after, limit=size,
            max_bytes=MAX_CALL_PAYLOAD_BYTES))
        token = "" if page.after_id is None else encode_token(
            {"after": page.after_id, "source": request.source})
        return pb.ListDeadLettersResponse(dead_letters=[_to_proto(x) for x in page.letters],
                                          next_page_token=token)

    async def RetryDeadLetters(self, request: pb.RetryDeadLettersRequest,
                               context: grpc.aio.ServicerContext) -> pb.RetryDeadLettersResponse:
        ids = _selection(request.ids, request.all, request.source, self.replays)
        workspace = current_workspace()
        sources = [request.source] if request.source else sorted(self.replays)

        def retry(uow: UnitOfWork) -> pb.RetryDeadLettersResponse:
            letters = self.dead_letters.take(uow.session, workspace, ids, sources=sources,
                                             limit=MAX_PAGE_SIZE)
            by_source: dict[str, list[DeadLetter]] = {}
            for letter in letters:
                by_source.setdefault(letter.source, []).append(letter)
            # Oldest first across sources too, so what one workspace sends keeps its order.
            for source, group in sorted(by_source.items(), key=lambda kv: kv[1][0].id):
                self.replays[source](uow, group)
            more = ids is None and len(letters) == MAX_PAGE_SIZE and bool(
                self.dead_letters.count(uow.session, workspace, sources=sources))
            return pb.RetryDeadLettersResponse(retried_ids=[x.id for x in letters], more=more)

        return await once(self.transactions, request, pb.RetryDeadLettersResponse, retry)

    async def PurgeDeadLetters(self, request: pb.PurgeDeadLettersRequest,
                               context: grpc.aio.ServicerContext) -> pb.PurgeDeadLettersResponse:
        ids = _selection(request.ids, request.all, request.source, None)
        workspace = current_workspace()
        sources = [request.source] if request.source else None

        def purge(uow: UnitOfWork) -> pb.PurgeDeadLettersResponse:
            letters = self.dead_letters.take(uow.session, workspace, ids, sources=sources,
                                             limit=MAX_PAGE_SIZE)
            more = ids is None and len(letters) == MAX_PAGE_SIZE and bool(
                self.dead_letters.count(uow.session, workspace, sources=sources))
            return pb.PurgeDeadLettersResponse(purged_ids=[x.id for x in letters], more=more)

        return await once(self.transactions, request, pb.PurgeDeadLettersResponse, purge)


def _to_proto(letter: DeadLetter) -> pb.DeadLetter:
    return pb.DeadLetter(
        id=letter.id, source=letter.source, item_key=letter.item_key, payload=letter.payload,
        error=letter.error, attempts=letter.attempts,
        first_failed_time=to_timestamp(letter.first_failed_time),
        last_failed_time=to_timestamp(letter.last_failed_time),
        traceparent=letter.traceparent)
