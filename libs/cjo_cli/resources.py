"""Each kind `cjo apply` and `cjo get` know: how to find the object on the server, how to create
and update it, and which of its fields a manifest may set (the rest are output only)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, json_format
from google.protobuf.message import Message

from cjo.content.v1 import content_item_pb2
from cjo.content.v1 import content_service_pb2 as content_pb
from cjo.decisioning.v1 import action_pb2, decision_point_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as dec_pb
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import policy_pb2, provider_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.identity.v1 import identity_settings_pb2, segment_pb2
from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_client import Client

OUTPUT_ONLY = {"name", "etag", "revision", "create_time", "update_time", "state",
               "published_version", "latest_version", "missing_variables", "member_count",
               "error_count", "consecutive_error_count", "last_error", "last_error_time",
               "last_error_profile_id", "backfill", "secret_keys", "status_webhook_url",
               "computed_traits_backfill", "journey_id", "provider_id"}


def to_dict(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return data


def settable(message: Message) -> dict[str, Any]:
    """The fields of a stored object a manifest can set."""
    return {k: v for k, v in to_dict(message).items() if k not in OUTPUT_ONLY}


def request_id(*parts: object) -> str:
    # The same manifest against the same stored state is one change, so a retried apply never
    # applies twice; once the server's object changed (a new etag), it is a new change.
    text = json.dumps(parts, sort_keys=True, default=str)
    return "cjo-apply-" + hashlib.sha256(text.encode()).hexdigest()[:32]


async def _missing_is_none(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


@dataclass(frozen=True)
class Kind:
    """One kind of object: its proto, the field naming it in a manifest, and the calls."""

    name: str
    message: type[Message]
    key_field: str  # what names the object in a manifest (a key, an id, a display name)
    get: Callable[[Client, str], Awaitable[Message | None]]
    create: Callable[[Client, Message, str], Awaitable[Message]] | None
    update: Callable[[Client, Message, Message, list[str], str], Awaitable[Message]]
    list: Callable[[Client], Awaitable[list[Message]]]

    def parse(self, spec: dict[str, Any]) -> Message:
        message = self.message()
        json_format.ParseDict(spec, message)
        return message

    def key_of(self, spec: dict[str, Any]) -> str:
        return str(spec.get(self.key_field, ""))


async def _paged(call: Callable[[str], Awaitable[Any]], field: str) -> list[Message]:
    items: list[Message] = []
    token = ""
    while True:
        reply = await call(token)
        items.extend(getattr(reply, field))
        token = reply.next_page_token
        if not token:
            return items


def _by(items: list[Message], field: str, value: str) -> Message | None:
    return next((i for i in items if getattr(i, field) == value), None)


# --- content -----------------------------------------------------------------------------------


async def _get_content(c: Client, key: str) -> Message | None:
    reply = await _missing_is_none(c.content.GetContentItem(
        content_pb.GetContentItemRequest(name=f"contentItems/{key}"), metadata=c.metadata))
    return reply.content_item if reply else None


async def _create_content(c: Client, item: Message, rid: str) -> Message:
    reply = await c.content.CreateContentItem(content_pb.CreateContentItemRequest(
        content_item=item, request_id=rid), metadata=c.metadata)
    return await _publish_content(c, reply.content_item, rid)


async def _publish_content(c: Client, item: Any, rid: str) -> Message:
    # Journeys and actions render published versions only: applied content is published.
    await c.content.PublishContentItem(content_pb.PublishContentItemRequest(
        name=item.name, request_id=f"{rid}-publish"), metadata=c.metadata)
    published: Message = item
    return published


async def _update_content(c: Client, stored: Any, item: Any, paths: list[str],
                          rid: str) -> Message:
    item.name = stored.name
    if paths:
        reply = await c.content.UpdateContentItem(content_pb.UpdateContentItemRequest(
            content_item=item, update_mask=field_mask_pb2.FieldMask(paths=paths),
            request_id=rid), metadata=c.metadata)
        stored = reply.content_item
    return await _publish_content(c, stored, rid)


async def _list_content(c: Client) -> list[Message]:
    return await _paged(lambda t: c.content.ListContentItems(content_pb.ListContentItemsRequest(
        page_size=100, page_token=t), metadata=c.metadata), "content_items")


async def _get_snippet(c: Client, key: str) -> Message | None:
    reply = await _missing_is_none(c.content.GetSnippet(
        content_pb.GetSnippetRequest(name=f"snippets/{key}"), metadata=c.metadata))
    return reply.snippet if reply else None


async def _create_snippet(c: Client, snippet: Message, rid: str) -> Message:
    reply = await c.content.CreateSnippet(content_pb.CreateSnippetRequest(
        snippet=snippet, request_id=rid), metadata=c.metadata)
    created: Message = reply.snippet
    return created


async def _update_snippet(c: Client, stored: Any, snippet: Any, paths: list[str],
                          rid: str) -> Message:
    snippet.name = stored.name
    reply = await c.content.UpdateSnippet(content_pb.UpdateSnippetRequest(
        snippet=snippet, request_id=rid), metadata=c.metadata)
    updated: Message = reply.snippet
    return updated


async def _list_snippets(c: Client) -> list[Message]:
    return await _paged(lambda t: c.content.ListSnippets(content_pb.ListSnippetsRequest(
        page_size=100, page_token=t), metadata=c.metadata), "snippets")


# --- identity ----------------------------------------------------------------------------------


async def _get_segment(c: Client, segment_id: str) -> Message | None:
    reply = await _missing_is_none(c.identity.GetSegment(
        identity_pb.GetSegmentRequest(name=f"segments/{segment_id}"), metadata=c.metadata))
    return reply.segment if reply else None


async def _create_segment(c: Client, segment: Message, rid: str) -> Message:
    reply = await c.identity.CreateSegment(identity_pb.CreateSegmentRequest(
        segment=segment, request_id=rid), metadata=c.metadata)
    created: Message = reply.segment
    return created


async def _update_segment(c: Client, stored: Any, segment: Any, paths: list[str],
                          rid: str) -> Message:
    segment.name = stored.name
    reply = await c.identity.UpdateSegment(identity_pb.UpdateSegmentRequest(
        segment=segment, update_mask=field_mask_pb2.FieldMask(paths=paths), request_id=rid),
        metadata=c.metadata)
    updated: Message = reply.segment
    return updated


async def _list_segments(c: Client) -> list[Message]:
    return await _paged(lambda t: c.identity.ListSegments(identity_pb.ListSegmentsRequest(
        page_size=100, page_token=t), metadata=c.metadata), "segments")


# --- delivery ----------------------------------------------------------------------------------


async def _list_providers(c: Client) -> list[Message]:
    reply = await c.delivery.ListProviders(delivery_pb.ListProvidersRequest(),
                                           metadata=c.metadata)
    return list(reply.providers)


async def _get_provider(c: Client, display_name: str) -> Message | None:
    # Delivery names providers itself; a manifest names one by its display name.
    return _by(await _list_providers(c), "display_name", display_name)


async def _create_provider(c: Client, provider: Message, rid: str) -> Message:
    reply = await c.delivery.CreateProvider(delivery_pb.CreateProviderRequest(
        provider=provider, request_id=rid), metadata=c.metadata)
    created: Message = reply.provider
    return created


async def _update_provider(c: Client, stored: Any, provider: Any, paths: list[str],
                           rid: str) -> Message:
    provider.name = stored.name
    reply = await c.delivery.UpdateProvider(delivery_pb.UpdateProviderRequest(
        provider=provider, update_mask=field_mask_pb2.FieldMask(paths=paths), request_id=rid),
        metadata=c.metadata)
    updated: Message = reply.provider
    return updated


# --- decisioning -------------------------------------------------------------------------------


async def _get_action(c: Client, key: str) -> Message | None:
    reply = await _missing_is_none(c.decisioning.GetAction(
        dec_pb.GetActionRequest(name=f"actions/{key}"), metadata=c.metadata))
    return reply.action if reply else None


async def _create_action(c: Client, action: Message, rid: str) -> Message:
    reply = await c.decisioning.CreateAction(dec_pb.CreateActionRequest(
        action=action, request_id=rid), metadata=c.metadata)
    created: Message = reply.action
    return created


async def _update_action(c: Client, stored: Any, action: Any, paths: list[str],
                         rid: str) -> Message:
    action.name = stored.name
    reply = await c.decisioning.UpdateAction(dec_pb.UpdateActionRequest(
        action=action, update_mask=field_mask_pb2.FieldMask(paths=paths), request_id=rid),
        metadata=c.metadata)
    updated: Message = reply.action
    return updated


async def _list_actions(c: Client) -> list[Message]:
    return await _paged(lambda t: c.decisioning.ListActions(dec_pb.ListActionsRequest(
        page_size=100, page_token=t), metadata=c.metadata), "actions")


async def _get_point(c: Client, key: str) -> Message | None:
    reply = await _missing_is_none(c.decisioning.GetDecisionPoint(
        dec_pb.GetDecisionPointRequest(name=f"decisionPoints/{key}"), metadata=c.metadata))
    return reply.decision_point if reply else None


async def _create_point(c: Client, point: Message, rid: str) -> Message:
    reply = await c.decisioning.CreateDecisionPoint(dec_pb.CreateDecisionPointRequest(
        decision_point=point, request_id=rid), metadata=c.metadata)
    created: Message = reply.decision_point
    return created


async def _update_point(c: Client, stored: Any, point: Any, paths: list[str],
                        rid: str) -> Message:
    point.name = stored.name
    reply = await c.decisioning.UpdateDecisionPoint(dec_pb.UpdateDecisionPointRequest(
        decision_point=point, update_mask=field_mask_pb2.FieldMask(paths=paths),
        request_id=rid), metadata=c.metadata)
    updated: Message = reply.decision_point
    return updated


async def _list_points(c: Client) -> list[Message]:
    return await _paged(lambda t: c.decisioning.ListDecisionPoints(
        dec_pb.ListDecisionPointsRequest(page_size=100, page_token=t), metadata=c.metadata),
        "decision_points")


# --- orchestration -----------------------------------------------------------------------------


async def _list_journeys(c: Client) -> list[Message]:
    return await _paged(lambda t: c.orchestration.ListJourneys(orch_pb.ListJourneysRequest(
        page_size=100, page_token=t), metadata=c.metadata), "journeys")


async def _get_journey(c: Client, display_name: str) -> Message | None:
    # Orchestration names journeys itself; a manifest names one by its display name (an
    # archived journey of that name is history, not the one to update).
    live = [j for j in await _list_journeys(c)
            if j.state != journey_pb2.JOURNEY_STATE_ARCHIVED]
    return _by(live, "display_name", display_name)


async def _create_journey(c: Client, journey: Message, rid: str) -> Message:
    reply = await c.orchestration.CreateJourney(orch_pb.CreateJourneyRequest(
        journey=journey, request_id=rid), metadata=c.metadata)
    created: Message = reply.journey
    return created


async def _update_journey(c: Client, stored: Any, journey: Any, paths: list[str],
                          rid: str) -> Message:
    journey.name = stored.name
    reply = await c.orchestration.UpdateJourney(orch_pb.UpdateJourneyRequest(
        journey=journey, update_mask=field_mask_pb2.FieldMask(paths=paths), request_id=rid),
        metadata=c.metadata)
    updated: Message = reply.journey
    return updated


async def publish_journey(c: Client, journey: Any, rid: str) -> Message:
    reply = await c.orchestration.PublishJourney(orch_pb.PublishJourneyRequest(
        name=journey.name, request_id=f"{rid}-publish"), metadata=c.metadata)
    published: Message = reply.journey
    return published


KIND_TABLE: dict[str, Kind] = {
    "Content": Kind("Content", content_item_pb2.ContentItem, "key", _get_content,
                    _create_content, _update_content, _list_content),
    "Snippet": Kind("Snippet", content_item_pb2.Snippet, "key", _get_snippet, _create_snippet,
                    _update_snippet, _list_snippets),
    "Segment": Kind("Segment", segment_pb2.Segment, "segment_id", _get_segment,
                    _create_segment, _update_segment, _list_segments),
    "Provider": Kind("Provider", provider_pb2.Provider, "display_name", _get_provider,
                     _create_provider, _update_provider, _list_providers),
    "Action": Kind("Action", action_pb2.Action, "key", _get_action, _create_action,
                   _update_action, _list_actions),
    "DecisionPoint": Kind("DecisionPoint", decision_point_pb2.DecisionPoint, "key", _get_point,
                          _create_point, _update_point, _list_points),
    "Journey": Kind("Journey", journey_pb2.Journey, "display_name", _get_journey,
                    _create_journey, _update_journey, _list_journeys),
}


# --- settings: one of each per workspace ---------------------------------------------------------


@dataclass(frozen=True)
class SettingsPart:
    """A workspace-wide settings object a Settings manifest can hold under ``section``."""

    section: str
    message: type[Message]
    get: Callable[[Client], Awaitable[Message]]
    put: Callable[[Client, Message, list[str], str], Awaitable[Message]]


async def _get_identity_settings(c: Client) -> Message:
    reply = await c.identity.GetIdentitySettings(identity_pb.GetIdentitySettingsRequest(),
                                                 metadata=c.metadata)
    got: Message = reply.settings
    return got


async def _put_identity_settings(c: Client, merged: Message, paths: list[str],
                                 rid: str) -> Message:
    reply = await c.identity.UpdateIdentitySettings(identity_pb.UpdateIdentitySettingsRequest(
        settings=merged, request_id=rid), metadata=c.metadata)
    got: Message = reply.settings
    return got


async def _get_content_settings(c: Client) -> Message:
    reply = await c.content.GetContentSettings(content_pb.GetContentSettingsRequest(),
                                               metadata=c.metadata)
    got: Message = reply.content_settings
    return got


async def _put_content_settings(c: Client, merged: Message, paths: list[str],
                                rid: str) -> Message:
    reply = await c.content.UpdateContentSettings(content_pb.UpdateContentSettingsRequest(
        content_settings=merged, update_mask=field_mask_pb2.FieldMask(paths=paths),
        request_id=rid), metadata=c.metadata)
    got: Message = reply.content_settings
    return got


async def _get_policy(c: Client) -> Message:
    reply = await c.delivery.GetDeliveryPolicy(delivery_pb.GetDeliveryPolicyRequest(),
                                               metadata=c.metadata)
    got: Message = reply.policy
    return got


async def _put_policy(c: Client, merged: Message, paths: list[str], rid: str) -> Message:
    reply = await c.delivery.UpdateDeliveryPolicy(delivery_pb.UpdateDeliveryPolicyRequest(
        policy=merged, request_id=rid), metadata=c.metadata)
    got: Message = reply.policy
    return got


SETTINGS_PARTS: dict[str, SettingsPart] = {
    "identity": SettingsPart("identity", identity_settings_pb2.IdentitySettings,
                             _get_identity_settings, _put_identity_settings),
    "content": SettingsPart("content", content_item_pb2.ContentSettings,
                            _get_content_settings, _put_content_settings),
    "delivery_policy": SettingsPart("delivery_policy", policy_pb2.DeliveryPolicy, _get_policy,
                                    _put_policy),
}
