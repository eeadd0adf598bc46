"""DeliveryService's message RPCs: protos in, use-cases (service_layer/) called, protos out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2
from cjo_delivery.adapters.contents import CHANNELS, body_of, email_of
from cjo_delivery.adapters.inbox import InboxHub
from cjo_delivery.api.inbox import InboxRpcs
from cjo_delivery.api.providers import ProviderRpcs
from cjo_delivery.domain.messages import (
    Accepted,
    Channel,
    Message,
    MessageStatus,
    NewMessage,
    message_id_of,
    message_name,
    validate_send,
)
from cjo_delivery.domain.policies import load_zone
from cjo_delivery.domain.providers import provider_name
from cjo_delivery.service_layer import messages
from cjo_delivery.service_layer.messages import Announce
from cjo_platform.db.unit_of_work import Transactions
from cjo_platform.errors import InvalidArgument
from cjo_platform.limits import check_batch
from cjo_platform.paging import decode_token, encode_token, page_size
from cjo_platform.protobuf import to_timestamp
from cjo_platform.rpc.auth import current_workspace
from cjo_platform.rpc.batch import BatchAnswer
from cjo_platform.secret_box import SecretBox
from cjo_platform.telemetry import current_traceparent

DOMAIN = "delivery.cjo"

_STATUSES = {
    MessageStatus.QUEUED: message_pb2.MESSAGE_STATUS_QUEUED,
    MessageStatus.SENDING: message_pb2.MESSAGE_STATUS_SENDING,
    MessageStatus.SENT: message_pb2.MESSAGE_STATUS_SENT,
    MessageStatus.FAILED: message_pb2.MESSAGE_STATUS_FAILED,
    MessageStatus.SUPPRESSED: message_pb2.MESSAGE_STATUS_SUPPRESSED,
    MessageStatus.DEFERRED: message_pb2.MESSAGE_STATUS_DEFERRED,
    MessageStatus.DELIVERED: message_pb2.MESSAGE_STATUS_DELIVERED,
    MessageStatus.BOUNCED: message_pb2.MESSAGE_STATUS_BOUNCED,
    MessageStatus.HELD: message_pb2.MESSAGE_STATUS_HELD,
}
_FROM_PROTO = {value: key for key, value in _STATUSES.items()}


def _new_message(item: pb.SendMessageRequest) -> NewMessage:
    channel = CHANNELS.get(item.content.channel)
    validate_send(idempotency_key=item.idempotency_key, profile_id=item.recipient.profile_id,
                  address=item.recipient.address, channel=channel,
                  email=email_of(item.content), journey_id=item.journey_id,
                  enrollment_id=item.enrollment_id, body=body_of(item.content, channel),
                  topic=item.topic, time_zone=item.time_zone,
                  time_zone_known=load_zone(item.time_zone) is not None,
                  decision_id=item.decision_id).raise_if_any()
    assert channel is not None
    # The inbox is the profile's: an in-app message goes to its profile whatever address the
    # caller gave (orchestration passes "-" for channels addressed by profile).
    address = item.recipient.address if channel is not Channel.IN_APP else ""
    return NewMessage(
        idempotency_key=item.idempotency_key, profile_id=item.recipient.profile_id,
        address=address or item.recipient.profile_id, channel=channel,
        content=item.content.SerializeToString(deterministic=True),
        journey_id=item.journey_id, enrollment_id=item.enrollment_id, topic=item.topic,
        transactional=item.transactional, time_zone=item.time_zone,
        decision_id=item.decision_id)


def _to_proto(message: Message, content: common_pb2.RenderedMessage | None = None,
              stamp: Callable[[datetime], Timestamp | None] = to_timestamp
              ) -> message_pb2.Message:
    """``content``: the stored content already parsed (the request's, for a message it just
    queued), else it is parsed from the row. ``stamp`` converts the times (a batch's messages
    share theirs: see :class:`_Stamps`)."""
    return message_pb2.Message(
        name=message_name(message.message_id), message_id=message.message_id,
        idempotency_key=message.idempotency_key,
        recipient=message_pb2.Recipient(profile_id=message.profile_id, address=message.address),
        content=(content if content is not None
                 else common_pb2.RenderedMessage.FromString(message.content)),
        journey_id=message.journey_id, enrollment_id=message.enrollment_id,
        status=_STATUSES[message.status], attempts=message.attempts, error=message.error,
        provider_message_id=message.provider_message_id,
        create_time=stamp(message.create_time),
        update_time=stamp(message.update_time), topic=message.topic,
        transactional=message.transactional,
        next_attempt_time=(stamp(message.next_attempt_time)
                           if message.next_attempt_time is not None else None),
        provider=provider_name(message.provider_id) if message.provider_id else "",
        decision_id=message.decision_id,
    )


class _Stamps:
    """Timestamps of one answer, each moment converted once: the messages a batch queued share
    one creation, update and due time (a proto field set from it gets a copy)."""

    def __init__(self) -> None:
        self._made: dict[datetime, Timestamp | None] = {}

    def __call__(self, moment: datetime) -> Timestamp | None:
        made = self._made.get(moment)
        if made is None:
            made = self._made[moment] = to_timestamp(moment)
        return made


class DeliveryServicer(ProviderRpcs, InboxRpcs, pb_grpc.DeliveryServiceServicer):
    def __init__(self, transactions: Transactions,
                 announce_queued: Announce,
                 status_url: Callable[[str, str, str], str] | None = None,
                 hub: InboxHub | None = None, secret_box: SecretBox | None = None,
                 private_destinations: bool = False) -> None:
        self.transactions = transactions
        self.private_destinations = private_destinations
        self.announce_queued = announce_queued
        self.status_url = status_url
        self.secret_box = secret_box or SecretBox([])
        self.hub = hub or InboxHub()

    async def _queue(self, batch: Sequence[NewMessage]) -> list[Accepted]:
        workspace = current_workspace()
        # Sending happens later, in the sender; the trace of this request follows the message.
        traceparent = current_traceparent()
        return await self.transactions.run(lambda uow: messages.queue_messages(
            uow, workspace, batch, traceparent, self.announce_queued))

    async def SendMessage(self, request: pb.SendMessageRequest,
                          context: grpc.aio.ServicerContext) -> pb.SendMessageResponse:
        (accepted,) = await self._queue([_new_message(request)])
        return pb.SendMessageResponse(message=_to_proto(accepted.message),
                                      duplicate=accepted.duplicate)

    async def BatchSendMessages(self, request: pb.BatchSendMessagesRequest,
                                context: grpc.aio.ServicerContext
                                ) -> pb.BatchSendMessagesResponse:
        answer = BatchAnswer(request.requests, "requests", DOMAIN, pb.BatchSendMessagesResult)
        valid = answer.parse(_new_message)
        if valid:
            accepted = await self._queue([message for _, message in valid])
            stamp = _Stamps()
            for (index, _), queued in zip(valid, accepted, strict=True):
                # A message queued now stores exactly its request's content: not parsed back.
                content = None if queued.duplicate else request.requests[index].content
                answer.results[index].message.CopyFrom(
                    _to_proto(queued.message, content, stamp))
                answer.results[index].duplicate = queued.duplicate
        return pb.BatchSendMessagesResponse(results=answer.results)

    async def GetMessage(self, request: pb.GetMessageRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetMessageResponse:
        message_id = message_id_of(request.name)
        workspace = current_workspace()
        message = await self.transactions.run(
            lambda uow: messages.get_message(uow, workspace, message_id, request.name))
        return pb.GetMessageResponse(message=_to_proto(message))

    async def ListMessages(self, request: pb.ListMessagesRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListMessagesResponse:
        limit = page_size(request.page_size)
        after = _cursor(request)
        workspace = current_workspace()
        status = None
        if request.status:
            status = _FROM_PROTO.get(request.status)
            if status is None:
                raise InvalidArgument.one("status", "is not a MessageStatus")
        found = await self.transactions.run(lambda uow: messages.list_messages(
            uow, workspace, profile_id=request.profile_id, journey_id=request.journey_id,
            status=status, limit=limit + 1, after=after))
        page, more = found[:limit], len(found) > limit
        token = ""
        if more:
            last = page[-1]
            token = encode_token({"t": last.create_time.isoformat(), "id": last.message_id,
                                  "p": request.profile_id, "j": request.journey_id,
                                  "s": request.status})
        return pb.ListMessagesResponse(messages=[_to_proto(m) for m in page],
                                       next_page_token=token)

    async def EraseProfiles(self, request: pb.EraseProfilesRequest,
                            context: grpc.aio.ServicerContext) -> pb.EraseProfilesResponse:
        """Service-only (orchestration forwards erasures from its outbox)."""
        check_batch(request.profile_ids, "profile_ids")
        workspace = current_workspace()
        profile_ids = list(request.profile_ids)
        counts = await self.transactions.run(
            lambda uow: messages.erase_profiles(uow, workspace, profile_ids))
        return pb.EraseProfilesResponse(results=[
            pb.EraseProfileResult(profile_id=profile_id, canceled_count=canceled,
                                  in_flight_count=in_flight)
            for profile_id, (canceled, in_flight) in zip(profile_ids, counts, strict=True)])


def _cursor(request: pb.ListMessagesRequest) -> tuple[datetime, str] | None:
    cursor = decode_token(request.page_token)
    if cursor is None:
        return None
    try:
        after = (datetime.fromisoformat(cursor["t"]), str(cursor["id"]))
        same_filter = ((cursor["p"], cursor["j"], cursor.get("s", 0))
                       == (request.profile_id, request.journey_id, request.status))
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument.one("page_token", "is not a token returned by this method") from None
    if not same_filter:  # AIP-158: a token only continues the listing it came from
        raise InvalidArgument.one("page_token", "belongs to a listing with other filters")
    if after[0].tzinfo is None:
        raise InvalidArgument.one("page_token", "is not a token returned by this method")
    return after
