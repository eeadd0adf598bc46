"""Clients of identity (live profiles, profile updates), content (render), delivery (send) and
decisioning (decisions, send times, and the points of optimising splits): one batch call per
workspace per pass.

Answers become the engine's SendResult vocabulary: a per-item status that retrying cannot fix is
Rejected (the step fails), anything else Deferred (the same send is retried later, which is safe
because delivery deduplicates by the idempotency key).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_service_pb2
from cjo.decisioning.v1 import (
    action_pb2,
    decision_pb2,
    decision_point_pb2,
    decisioning_service_pb2,
)
from cjo.delivery.v1 import delivery_service_pb2
from cjo.identity.v1 import event_pb2, identity_service_pb2
from cjo_orchestration.adapters import stubs
from cjo_orchestration.domain.decisions import SplitPoint
from cjo_orchestration.domain.journeys import Channel
from cjo_orchestration.domain.orders import (
    Deferred,
    ProfileOrder,
    Rejected,
    SendResult,
    SendTimeFound,
    Sent,
    Unavailable,
)
from cjo_platform.config import ServiceSettings
from cjo_platform.errors import FailedPrecondition
from cjo_platform.errors import Unavailable as PeerUnavailable
from cjo_platform.limits import MAX_BATCH_ITEMS
from cjo_platform.logging import get_logger
from cjo_platform.profiles import fill_view_struct, view_from_proto
from cjo_platform.protobuf import dict_to_struct, from_timestamp, to_timestamp
from cjo_platform.rpc.batch import call_in_chunks, in_halves_when_too_large
from cjo_platform.rpc.client import channel, on_behalf_of, too_large
from cjo_platform.rpc.status import error_reason

channel_to = channel  # `channel` is also a parameter name in the decisioning client

log = get_logger(__name__)

CHANNELS = {
    Channel.EMAIL: common_pb2.CHANNEL_EMAIL,
    Channel.SMS: common_pb2.CHANNEL_SMS,
    Channel.PUSH: common_pb2.CHANNEL_PUSH,
    Channel.IN_APP: common_pb2.CHANNEL_IN_APP,
    Channel.WEBHOOK: common_pb2.CHANNEL_WEBHOOK,
}

# Per-item codes that say the request itself is wrong: the same request will fail again.
PERMANENT_CODES = frozenset({
    code_pb2.INVALID_ARGUMENT, code_pb2.NOT_FOUND, code_pb2.FAILED_PRECONDITION,
    code_pb2.OUT_OF_RANGE, code_pb2.PERMISSION_DENIED, code_pb2.UNIMPLEMENTED,
})


@dataclass(frozen=True)
class RenderItem:
    profile_id: str
    content_key: str
    channel: Channel
    traits: Mapping[str, Any]
    properties: Mapping[str, Any]
    content_version: int = 0
    # Identity's Profile that ``traits`` is the view of, unchanged (a LiveProfile's
    # ``message``): the context's traits are copied from it (profiles.fill_view_struct).
    profile: Any = None


@dataclass(frozen=True)
class SendItem:
    idempotency_key: str
    profile_id: str
    address: str
    content: Any  # the cjo.common.v1.RenderedMessage content answered
    journey_id: str
    enrollment_id: str
    time_zone: str = ""  # the profile's IANA zone, for delivery's quiet hours; "" the default
    topic: str = ""  # consent topic within the channel; "" the channel as a whole
    transactional: bool = False  # exempt from consent, frequency caps and quiet hours
    decision_id: str = ""  # the decisioning decision the message carries out, if any


@dataclass(frozen=True)
class DecideItem:
    """One person of a BatchDecide call: the profile view the step round read (decisioning
    does not ask identity again), and the step's key as the request id."""

    profile_id: str
    profile: Mapping[str, Any]
    request_id: str
    journey_id: str
    enrollment_id: str
    node_id: str


@dataclass(frozen=True)
class ChosenAction:
    """The first-ranked action of a decision, as a journey acts on it."""

    key: str
    contents: tuple[tuple[Channel, str], ...] = ()  # (channel, content key), in the action's order
    topic: str = ""
    transactional: bool = False


@dataclass(frozen=True)
class DecisionAnswer:
    """A decision: its id, and the chosen action (None when no action was eligible)."""

    decision_id: str
    action: ChosenAction | None


@dataclass(frozen=True)
class LiveProfile:
    """A profile as identity holds it now: ``profile_id`` is the survivor's when the id asked
    for was merged away; ``view`` is what conditions and templates read as ``profile``;
    ``merged_from`` the profiles merged into it, with when (identity's clock)."""

    profile_id: str
    view: dict[str, Any]
    merged_from: tuple[tuple[str, datetime], ...] = ()
    # The cjo.identity.v1.Profile identity answered, which ``view`` was made of.
    message: Any = None


@dataclass(frozen=True)
class ProfileGone:
    """Identity answered NOT_FOUND: the profile was erased (or never existed)."""

    detail: str


# A cjo.common.v1.RenderedMessage, or why there is none.
RenderOutcome: TypeAlias = Message | Rejected | Deferred
Metadata: TypeAlias = tuple[tuple[str, str], ...]
Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


# Renders per BatchRenderContent call. The answer carries every rendered message, whose size
# is known only once rendered: a step round's batch (up to 1,000) is rendered a hundred at a
# time, so an answer stays well inside a call's limit even for rendered emails of 300 KB.
RENDER_CHUNK = 100
# A send's bytes besides its rendered content (keys, ids, address, topic), a generous bound.
SEND_ITEM_OVERHEAD = 512


def _send_bytes(item: SendItem) -> int:
    """About what ``item`` adds to a BatchSendMessages request: its rendered content (known
    once rendered) plus the rest."""
    size: int = item.content.ByteSize() if item.content is not None else 0
    return size + SEND_ITEM_OVERHEAD


def _item_failure(peer: str, status: status_pb2.Status) -> Rejected | Deferred:
    detail = f"{peer}: {code_pb2.Code.Name(status.code)}: {status.message}"
    return Rejected(detail) if status.code in PERMANENT_CODES else Deferred(detail)


# Whole-call failures that say the peer is busy or away, not that an item is bad.
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                             grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class _Skipped(Deferred):
    """Content skipped the render (RENDER_SKIPPED): another request of its version in the batch
    reached the render time limit."""


def _call_failure(peer: str, exc: grpc.aio.AioRpcError) -> Deferred:
    # A whole call failing says nothing about the items; retry them (a bounded number of times).
    # A batch the peer refused is split first, so this is one item's answer or a transient one.
    code = exc.code()
    if code not in TRANSIENT_CODES:
        log.error("peer refused a whole batch", peer=peer, code=code.name,
                  error=exc.details())
    return Deferred(f"{peer}: {code.name}: {exc.details()}")


def _miscount(peer: str, got: int, sent: int) -> Deferred:
    log.error("peer answered a batch with the wrong number of results", peer=peer, got=got,
              sent=sent)
    return Deferred(f"{peer}: answered {got} results for {sent} requests")


def _version(version: int) -> dict[str, Any]:
    """A pinned content version, once content's RenderContentRequest carries one (content
    versions are evolving in parallel); until then every render uses the latest."""
    if version and _RENDER_VERSION_FIELD:
        return {_RENDER_VERSION_FIELD: version}
    return {}


_RENDER_VERSION_FIELD = next(
    (name for name in ("version", "content_version")
     if name in content_service_pb2.RenderContentRequest.DESCRIPTOR.fields_by_name), "")


def _decisioning_call_failure(exc: grpc.aio.AioRpcError) -> Rejected | Unavailable:
    """A whole decisioning call failed: NOT_FOUND (no such decision point) and other refusals
    of the request are the journey's definition's fault; anything else is decisioning's
    trouble, waited out."""
    detail = f"decisioning: {exc.code().name}: {exc.details()}"
    if exc.code() in TRANSIENT_CODES or exc.code() in (grpc.StatusCode.INTERNAL,
                                                      grpc.StatusCode.UNKNOWN,
                                                      grpc.StatusCode.CANCELLED):
        return Unavailable(detail)
    return Rejected(detail, journey_error=True)


def _decisioning_item_failure(status: status_pb2.Status) -> Rejected | Unavailable:
    detail = f"decisioning: {code_pb2.Code.Name(status.code)}: {status.message}"
    return Rejected(detail) if status.code in PERMANENT_CODES else Unavailable(detail)


def _decision(decision: decision_pb2.Decision) -> DecisionAnswer:
    if not decision.actions:
        return DecisionAnswer(decision.decision_id, None)
    first = decision.actions[0]
    channels = {value: key for key, value in CHANNELS.items()}
    return DecisionAnswer(decision.decision_id, ChosenAction(
        first.action,
        tuple((channels[c.channel], c.content_key) for c in first.contents
              if c.channel in channels),
        first.topic, first.transactional))


class Decisioning:
    """Decisioning as the step round asks it: BatchDecide per decision point, GetSendTimes per
    channel and maximum delay. Answers per item; a whole call that fails answers every item of
    its chunk alike (Unavailable: waited out; Rejected: the node fails)."""

    def __init__(self, settings: ServiceSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout

    async def decide(self, workspace_id: str, decision_point: str, channel: Channel | None,
                     time: datetime, items: Sequence[DecideItem]
                     ) -> list[DecisionAnswer | Rejected | Unavailable]:
        stub = stubs.decisioning(channel_to(self.settings.peer("decisioning")))
        metadata = on_behalf_of(self.settings.service_token, workspace_id)
        context = decision_pb2.DecisionContext(
            channel=CHANNELS[channel] if channel else common_pb2.CHANNEL_UNSPECIFIED,
            time=to_timestamp(time))

        async def decide(chunk: Sequence[DecideItem]) -> list[Any]:
            reply = await stub.BatchDecide(decisioning_service_pb2.BatchDecideRequest(
                decision_point=f"decisionPoints/{decision_point}", context=context,
                items=[decisioning_service_pb2.DecideItem(
                    profile_id=item.profile_id, profile=dict_to_struct(dict(item.profile)),
                    request_id=item.request_id,
                    context=decision_pb2.DecisionContext(
                        channel=context.channel, time=context.time,
                        journey_id=item.journey_id, enrollment_id=item.enrollment_id,
                        node_id=item.node_id))
                    for item in chunk]), metadata=metadata, timeout=self.timeout)
            if len(reply.results) != len(chunk):
                return [Unavailable(f"decisioning: answered {len(reply.results)} results for "
                                    f"{len(chunk)} people")] * len(chunk)
            return [_decision(r.decision) if r.status.code == code_pb2.OK
                    else _decisioning_item_failure(r.status) for r in reply.results]

        async def call(chunk: Sequence[DecideItem]) -> list[DecisionAnswer | Rejected
                                                            | Unavailable]:
            try:
                # Each item carries its profile: many large ones go in halves.
                answers: list[DecisionAnswer | Rejected | Unavailable] = (
                    await in_halves_when_too_large(chunk, decide))
            except grpc.aio.AioRpcError as exc:
                return [_decisioning_call_failure(exc)] * len(chunk)
            return answers

        return await call_in_chunks(items, call)

    async def send_times(self, workspace_id: str, channel: Channel | None, earliest: datetime,
                         max_delay: timedelta, profile_ids: Sequence[str]
                         ) -> list[SendTimeFound | Rejected | Unavailable]:
        stub = stubs.decisioning(channel_to(self.settings.peer("decisioning")))
        metadata = on_behalf_of(self.settings.service_token, workspace_id)
        delay = duration_pb2.Duration()
        delay.FromTimedelta(max_delay)

        async def call(chunk: Sequence[str]) -> list[SendTimeFound | Rejected | Unavailable]:
            try:
                reply = await stub.GetSendTimes(decisioning_service_pb2.GetSendTimesRequest(
                    profile_ids=list(chunk),
                    channel=CHANNELS[channel] if channel else common_pb2.CHANNEL_UNSPECIFIED,
                    earliest_time=to_timestamp(earliest), max_delay=delay),
                    metadata=metadata, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                return [_decisioning_call_failure(exc)] * len(chunk)
            if len(reply.send_times) != len(chunk):
                return [Unavailable(f"decisioning: answered {len(reply.send_times)} send times "
                                    f"for {len(chunk)} people")] * len(chunk)
            return [SendTimeFound(from_timestamp(t.send_time),
                                  decisioning_service_pb2.SendTimeSource.Name(t.source)
                                  .removeprefix("SEND_TIME_SOURCE_").lower())
                    for t in reply.send_times]

        return await call_in_chunks(profile_ids, call)


class Peers(Decisioning):
    """Identity, content, delivery and decisioning, called on behalf of a workspace with the
    service token."""

    def __init__(self, settings: ServiceSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout

    def _metadata(self, workspace_id: str) -> Metadata:
        return on_behalf_of(self.settings.service_token, workspace_id)

    async def _in_chunks(self, peer: str, workspace_id: str, items: Sequence[Item],
                         call: Callable[[Sequence[Item], Metadata], Awaitable[Any]],
                         answer: Callable[[Any], Outcome],
                         failure: Callable[[str, status_pb2.Status], Outcome | Rejected | Deferred]
                         = _item_failure, *, size: int = MAX_BATCH_ITEMS,
                         weight: Callable[[Item], int] | None = None,
                         ) -> list[Outcome | Rejected | Deferred]:
        """One batch call per chunk of ``items`` (at most ``size`` items, and with ``weight``
        at most a call's payload bytes: ``call_in_chunks``); each result with an OK status becomes
        ``answer(result)``, any other its Rejected or Deferred. A failure that names no item
        (the whole call failed, or it answered the wrong number of results) defers every item
        of its chunk; a chunk the peer refused, or one whose call or answer passed gRPC's
        message limit, is split in halves first."""
        metadata = self._metadata(workspace_id)

        async def chunk_outcomes(chunk: Sequence[Item]) -> list[Outcome | Rejected | Deferred]:
            try:
                reply = await call(chunk, metadata)
            except grpc.aio.AioRpcError as exc:
                if len(chunk) > 1 and (exc.code() not in TRANSIENT_CODES or too_large(exc)):
                    # Find the item the peer refuses, or make calls (and answers: identity's
                    # profiles, content's renders) small enough for gRPC's message limit.
                    return await halves(chunk)
                return [_call_failure(peer, exc)] * len(chunk)
            except Exception as exc:
                # The request could not be built (an item's data protobuf cannot carry): that
                # item fails for good, the others go on.
                if len(chunk) > 1:
                    return await halves(chunk)
                return [Rejected(f"{peer}: the request could not be built: "
                                 f"{type(exc).__name__}: {exc}")]
            if len(reply.results) != len(chunk):
                return [_miscount(peer, len(reply.results), len(chunk))] * len(chunk)
            return [answer(result) if result.status.code == code_pb2.OK
                    else failure(peer, result.status) for result in reply.results]

        async def halves(chunk: Sequence[Item]) -> list[Outcome | Rejected | Deferred]:
            # One after the other: a peer failing every call gets at most 2n - 1 calls, in turn.
            middle = len(chunk) // 2
            return [*await chunk_outcomes(chunk[:middle]), *await chunk_outcomes(chunk[middle:])]

        return await call_in_chunks(items, chunk_outcomes, size=size, weight=weight)

    async def render(self, workspace_id: str, items: Sequence[RenderItem]) -> list[RenderOutcome]:
        stub = stubs.content(channel(self.settings.peer("content")))

        async def call(chunk: Sequence[RenderItem], metadata: Metadata) -> Any:
            # Built in place: a message passed to a constructor is copied, and each item's
            # context would be copied twice (into its request, its request into the batch).
            request = content_service_pb2.BatchRenderContentRequest()
            for item in chunk:
                context = request.requests.add(
                    name=f"contentItems/{item.content_key}", channel=CHANNELS[item.channel],
                    **_version(item.content_version)).context
                context.profile_id = item.profile_id
                # Both present even when empty, as a constructor would set them (an empty
                # update leaves a Struct unset).
                context.traits.SetInParent()
                if item.profile is not None:
                    fill_view_struct(context.traits, item.profile, item.traits)
                else:
                    context.traits.update(item.traits)
                context.event.SetInParent()
                context.event.update(item.properties)
            return await stub.BatchRenderContent(request, metadata=metadata,
                                                 timeout=self.timeout)

        def failure(peer: str, status: status_pb2.Status) -> Rejected | Deferred:
            if error_reason(status) == "RENDER_SKIPPED":
                return _Skipped(f"{peer}: {code_pb2.Code.Name(status.code)}: {status.message}")
            return _item_failure(peer, status)

        outcomes: list[RenderOutcome] = await self._in_chunks(
            "content", workspace_id, items, call, lambda result: result.message, failure,
            size=RENDER_CHUNK)
        # A request skipped because another of its version reached the render time limit
        # (RENDER_SKIPPED) is sent again at once, once, without the rejected ones, so a fast
        # person behind one slow person of its version is not charged an attempt for them.
        # One pass only (review rrendercap3: passes bounded by the number of versions re-ran
        # an always-slow version's 2 s renders 117 times in one round, past the step lease);
        # what is still skipped is deferred as before.
        again = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, _Skipped)]
        if again:
            redone = await self._in_chunks(
                "content", workspace_id, [items[n] for n in again], call,
                lambda result: result.message, failure, size=RENDER_CHUNK)
            for n, outcome in zip(again, redone, strict=True):
                outcomes[n] = outcome
        return [Deferred(o.detail) if isinstance(o, _Skipped) else o for o in outcomes]

    async def profiles(self, workspace_id: str, profile_ids: Sequence[str]
                       ) -> list[LiveProfile | ProfileGone | Rejected | Deferred]:
        """The profiles as identity holds them now (BatchGetProfiles, chunks of 1,000): a
        merged-away id answers its survivor, an erased profile NOT_FOUND (ProfileGone)."""
        stub = stubs.identity(channel(self.settings.peer("identity")))

        async def call(chunk: Sequence[str], metadata: Metadata) -> Any:
            return await stub.BatchGetProfiles(
                identity_service_pb2.BatchGetProfilesRequest(
                    names=[f"profiles/{profile_id}" for profile_id in chunk]),
                metadata=metadata, timeout=self.timeout)

        def failure(peer: str, status: status_pb2.Status) -> ProfileGone | Rejected | Deferred:
            if status.code == code_pb2.NOT_FOUND:
                return ProfileGone(f"{peer}: NOT_FOUND: {status.message}")
            return _item_failure(peer, status)

        def answer(result: Any) -> LiveProfile | ProfileGone:
            profile = result.profile
            return LiveProfile(profile.profile_id, view_from_proto(profile),
                               tuple((m.merged_profile_id, from_timestamp(m.merge_time))
                                     for m in profile.merged_from), profile)

        return await self._in_chunks("identity", workspace_id, profile_ids, call, answer,
                                     failure)

    async def update_profiles(self, workspace_id: str,
                              orders: Sequence[ProfileOrder]) -> list[SendResult]:
        """Set traits through identity: one identify event per order, its message id the
        order's derived key, so identity applies a retried update once."""
        stub = stubs.identity(channel(self.settings.peer("identity")))

        async def call(chunk: Sequence[ProfileOrder], metadata: Metadata) -> Any:
            return await stub.IngestEvents(
                identity_service_pb2.IngestEventsRequest(events=[
                    event_pb2.Event(
                        message_id=f"orchestration:{order.idempotency_key}",
                        type=event_pb2.EVENT_TYPE_IDENTIFY, source="orchestration",
                        identifiers=[event_pb2.Identifier(type=kind, value=value)
                                     for kind, value in order.identifiers],
                        traits=dict_to_struct(dict(order.traits)))
                    for order in chunk]),
                metadata=metadata, timeout=self.timeout)

        return [*await self._in_chunks("identity", workspace_id, orders, call,
                                       lambda result: Sent(result.event_id))]

    async def send(self, workspace_id: str, items: Sequence[SendItem]) -> list[SendResult]:
        stub = stubs.delivery(channel(self.settings.peer("delivery")))

        async def call(chunk: Sequence[SendItem], metadata: Metadata) -> Any:
            # Built in place, so each rendered content is copied once (a constructor copies
            # the messages passed to it: into the request, then the request into the batch).
            request = delivery_service_pb2.BatchSendMessagesRequest()
            for item in chunk:
                send = request.requests.add(
                    idempotency_key=item.idempotency_key, journey_id=item.journey_id,
                    enrollment_id=item.enrollment_id, time_zone=item.time_zone,
                    topic=item.topic, transactional=item.transactional,
                    decision_id=item.decision_id)
                send.recipient.profile_id = item.profile_id
                send.recipient.address = item.address
                send.recipient.SetInParent()
                send.content.CopyFrom(item.content)
            return await stub.BatchSendMessages(request, metadata=metadata,
                                                timeout=self.timeout)

        return [*await self._in_chunks("delivery", workspace_id, items, call,
                                       lambda result: Sent(result.message.message_id),
                                       weight=_send_bytes)]


class DecisioningCatalog:
    """Creates or updates the decision points of a journey's optimising splits before the
    journey's version is written (UpdateAction / UpdateDecisionPoint with allow_missing, so a
    re-publish updates them). Decisioning unreachable: UNAVAILABLE, and nothing is published."""

    def __init__(self, settings: ServiceSettings, timeout: float) -> None:
        self.settings = settings
        self.timeout = timeout

    async def upsert(self, workspace_id: str, points: Sequence[SplitPoint]) -> None:
        if not points:
            return
        stub = stubs.decisioning(channel_to(self.settings.peer("decisioning")))
        metadata = on_behalf_of(self.settings.service_token, workspace_id)
        try:
            for point in points:
                for key, name in point.actions:
                    await stub.UpdateAction(decisioning_service_pb2.UpdateActionRequest(
                        action=action_pb2.Action(name=f"actions/{key}", key=key,
                                                 display_name=name),
                        allow_missing=True), metadata=metadata, timeout=self.timeout)
                window = duration_pb2.Duration()
                window.FromTimedelta(point.reward_window)
                await stub.UpdateDecisionPoint(decisioning_service_pb2.UpdateDecisionPointRequest(
                    decision_point=decision_point_pb2.DecisionPoint(
                        name=f"decisionPoints/{point.key}", key=point.key,
                        display_name=point.display_name,
                        actions=[key for key, _ in point.actions],
                        reward=decision_point_pb2.Reward(event_name=point.reward_event,
                                                         filter=point.reward_filter,
                                                         window=window),
                        exposure=decision_point_pb2.EXPOSURE_MODE_ON_DECIDE,
                        control_action=point.control_action,
                        min_control_share=point.min_control_share),
                    allow_missing=True), metadata=metadata, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in TRANSIENT_CODES:
                raise PeerUnavailable(f"decisioning could not be reached to create the decision "
                                      f"points of the journey's optimising splits: "
                                      f"{exc.code().name}: {exc.details()}; nothing was "
                                      "published, retry", reason="DECISIONING_UNAVAILABLE"
                                      ) from exc
            # The journey was checked against decisioning's rules; a refusal is still possible
            # (an action key taken by a hand-made action, say): publishing fails with it.
            raise FailedPrecondition(f"decisioning refused the decision point of an optimising "
                                     f"split: {exc.code().name}: {exc.details()}",
                                     reason="DECISION_POINT_REFUSED") from exc
