"""In-app inbox RPCs of DeliveryService: list, mark, and a live stream of new messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import grpc

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import inbox_pb2
from cjo_delivery.adapters.inbox import InboxHub
from cjo_delivery.domain.inbox import InboxMessage, InboxState, inbox_id_of, inbox_name
from cjo_delivery.service_layer import inbox
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import InvalidArgument
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.auth import current_workspace

_STATES = {InboxState.UNREAD: inbox_pb2.INBOX_STATE_UNREAD,
           InboxState.READ: inbox_pb2.INBOX_STATE_READ,
           InboxState.DISMISSED: inbox_pb2.INBOX_STATE_DISMISSED}
_MARKS = {inbox_pb2.INBOX_STATE_READ: InboxState.READ,
          inbox_pb2.INBOX_STATE_DISMISSED: InboxState.DISMISSED}
# How often a subscriber looks for new messages unasked: the safety net should the inbox signal
# (adapters/inbox.py, from whichever replica delivered) be lost.
POLL_SECONDS = 2.0
_STREAM_BATCH = 1000


def inbox_to_proto(message: InboxMessage) -> inbox_pb2.InboxMessage:
    return inbox_pb2.InboxMessage(
        name=inbox_name(message.message_id), message_id=message.message_id,
        profile_id=message.profile_id,
        content=common_pb2.RenderedInApp.FromString(message.content),
        state=_STATES[message.state], journey_id=message.journey_id,
        create_time=to_timestamp(message.create_time),
        update_time=to_timestamp(message.update_time))


def _cursor(token: str, profile_id: str, dismissed: bool) -> tuple[datetime, str] | None:
    cursor = decode_token(token)
    if cursor is None:
        return None
    try:
        after = (datetime.fromisoformat(cursor["t"]), str(cursor["id"]))
        same = (cursor["p"], cursor["d"]) == (profile_id, dismissed)
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument.one("page_token", "is not a token returned by this method") from None
    if not same or after[0].tzinfo is None:
        raise InvalidArgument.one("page_token", "belongs to another listing")
    return after


class InboxRpcs:
    """Mixed into DeliveryServicer."""

    transactions: Transactions
    hub: InboxHub

    async def ListInboxMessages(self, request: pb.ListInboxMessagesRequest,
                                context: grpc.aio.ServicerContext
                                ) -> pb.ListInboxMessagesResponse:
        if not request.profile_id:
            raise InvalidArgument.one("profile_id", "is required")
        limit = page_size(request.page_size)
        after = _cursor(request.page_token, request.profile_id, request.include_dismissed)
        workspace = current_workspace()

        found = await self.transactions.run(lambda uow: inbox.list_inbox(
            uow, workspace, request.profile_id, include_dismissed=request.include_dismissed,
            limit=limit + 1, after=after))
        page = found[:limit]
        token = ""
        if len(found) > limit:
            token = encode_token({"t": page[-1].create_time.isoformat(),
                                  "id": page[-1].message_id, "p": request.profile_id,
                                  "d": request.include_dismissed})
        return pb.ListInboxMessagesResponse(messages=[inbox_to_proto(m) for m in page],
                                            next_page_token=token)

    async def MarkInboxMessage(self, request: pb.MarkInboxMessageRequest,
                               context: grpc.aio.ServicerContext
                               ) -> pb.MarkInboxMessageResponse:
        message_id = inbox_id_of(request.name)
        state = _MARKS.get(request.state)
        if state is None:
            raise InvalidArgument.one("state", "must be INBOX_STATE_READ or INBOX_STATE_DISMISSED")
        workspace = current_workspace()

        found = await self.transactions.run(
            lambda uow: inbox.mark(uow, workspace, message_id, request.name, state))
        return pb.MarkInboxMessageResponse(message=inbox_to_proto(found))

    async def SubscribeInbox(self, request: pb.SubscribeInboxRequest,
                             context: grpc.aio.ServicerContext
                             ) -> AsyncIterator[pb.SubscribeInboxResponse]:
        if not request.profile_id:
            raise InvalidArgument.one("profile_id", "is required")
        workspace = current_workspace()
        profile_id = request.profile_id
        wake = self.hub.subscribe(workspace, profile_id)
        # Only what arrives from now on. The position is the latest create_time streamed (at
        # first the newest existing message's) and every id known at that time: times tie
        # (one clock reading for a batch, a coarse clock), and a message of that very time can
        # still land, with any id, so ids alone cannot be the cursor there.
        since, seen = await self.transactions.run(
            lambda uow: inbox.starting_point(uow, workspace, profile_id))
        try:
            # Tells the caller the starting point is fixed: whatever lands from now on streams.
            await context.send_initial_metadata(())
            while True:
                with contextlib.suppress(TimeoutError):  # the poll for other replicas
                    await asyncio.wait_for(wake.wait(), POLL_SECONDS)
                wake.clear()
                # Everything from ``since`` on, paged by (time, id): no run of tied times,
                # however long, stalls the stream.
                cursor = (since, "")
                while True:
                    page = await self._read_after(workspace, profile_id, cursor)
                    for message in page:
                        cursor = (message.create_time, message.message_id)
                        if message.create_time == since and message.message_id in seen:
                            continue
                        if message.create_time > since:
                            since, seen = message.create_time, set()
                        seen.add(message.message_id)
                        yield pb.SubscribeInboxResponse(message=inbox_to_proto(message))
                    if len(page) < _STREAM_BATCH:
                        break
        finally:
            self.hub.unsubscribe(workspace, profile_id, wake)

    async def _read_after(self, workspace: str, profile_id: str,
                          cursor: inbox.Position) -> list[InboxMessage]:
        return await self.transactions.run(
            lambda uow: inbox.read_after(uow, workspace, profile_id, cursor, _STREAM_BATCH))
