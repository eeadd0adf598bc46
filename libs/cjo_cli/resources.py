"""Each kind `cjo apply` and `cjo get` know, as one row of a table: its proto, the service and
RPC names that store it, how a manifest names it, and which of its fields a manifest may set
(the rest are output only). Every kind goes through the same get / create / update / list
shape, built from its row; the services name their RPCs and fields by the same conventions
(`Get<Resource>`, `Create<Resource>Request.<field>`, `List<Resource>s` with paging)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
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
               "computed_traits_backfill", "journey_id", "provider_id", "unpublished_changes"}


def to_dict(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return data


def settable(message: Message) -> dict[str, Any]:
    """The fields of a stored object a manifest can set."""
    return {k: v for k, v in to_dict(message).items() if k not in OUTPUT_ONLY}


def manifest_spec(kind: Kind, message: Message) -> dict[str, Any]:
    """A stored object as a manifest's spec: its settable fields and, for the kinds the service
    names itself, the id it gave (so applying the file again finds it even after a rename)."""
    spec = settable(message)
    if kind.id_field:
        spec = {kind.id_field: getattr(message, kind.id_field), **spec}
    return spec


def request_id(*parts: object) -> str:
    # The same manifest against the same stored state is one change, so a retried apply never
    # applies twice; once the server's object changed (a new etag), it is a new change.
    text = json.dumps(parts, sort_keys=True, default=str)
    return "cjo-apply-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def stored_etag(stored: Any) -> str:
    """The stored object's version, for request ids: its etag (or update time) and its create
    time, so an object deleted and made again is never taken for the one before it."""
    version = str(getattr(stored, "etag", "")) or stored.update_time.ToJsonString()
    return f"{version}@{stored.create_time.ToJsonString()}"


async def _missing_is_none(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


class AmbiguousName(ValueError):
    """More than one live object has the name a manifest gives."""


class Retired(ValueError):
    """The object a manifest names was retired (an archived journey)."""

    def __init__(self, stored: Any, message: str) -> None:
        super().__init__(message)
        self.stored = stored


@dataclass(frozen=True)
class Kind:
    """One kind of object and how its service stores it.

    ``key_field`` names the object in a manifest. Where the service lets the caller choose the
    resource id (content, snippets, segments, actions, decision points), it is that id and the
    object is read by its resource name. Journeys and providers are named by the service (its
    API takes no caller-chosen id or key), so the most stable name is the id it gave:
    ``id_field``. A manifest that carries it (`cjo get` writes it) is matched by it, so a
    renamed display name updates the same object; one without it (a new file) is matched by
    ``key_field``, the display name, and `cjo apply` prints the id to add."""

    name: str
    message: type[Message]
    key_field: str
    service: str  # the Client attribute: content, identity, ...
    rpc: ModuleType  # the service's request/response messages
    resource: str  # proto resource name: ContentItem, Snippet, ...
    field: str  # the resource's field in requests and responses: content_item, snippet, ...
    collection: str  # resource names are `<collection>/<id>`
    id_field: str = ""  # the service-given id, when the service names the object itself
    masked: bool = True  # Update takes an update_mask (else it replaces the whole object)
    paged: bool = True  # List pages (else it returns everything at once)
    plural: str = ""  # the List response's field; default `<field>s`
    # After create or update: publish (content always; journeys when the manifest says so).
    publish: Callable[[Client, Any, str], Awaitable[Message]] | None = None
    always_publish: bool = False
    unpublished: Callable[[Any], bool] = lambda _: False  # stored, but not published as is
    live: Callable[[Any], bool] = lambda _: True  # which stored objects a name may match
    # Stored, but an operator stopped it: apply changes its draft and never publishes it
    # (publishing would resume it).
    paused: Callable[[Any], bool] = lambda _: False
    # What the service stores for a field left unset, by path (`nodes.send.on_failure`: list
    # items are not numbered). A field a manifest leaves out is reset (cleared, so the service
    # stores its default again); it is a difference only when the stored value is not that.
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def parse(self, spec: dict[str, Any]) -> Message:
        message = self.message()
        json_format.ParseDict(spec, message)
        return message

    def key_of(self, spec: dict[str, Any]) -> str:
        return str(spec.get(self.key_field, ""))

    def _call(self, c: Client, verb: str, request: Message,
              plural: str = "") -> Awaitable[Any]:
        method: Callable[..., Awaitable[Any]] = getattr(getattr(c, self.service),
                                                        f"{verb}{self.resource}{plural}")
        return method(request, metadata=c.metadata)

    def _request(self, verb: str, **fields: Any) -> Message:
        request: Message = getattr(self.rpc, f"{verb}{self.resource}Request")(**fields)
        return request

    async def get(self, c: Client, key: str) -> Message | None:
        """By resource id where the service takes one; else by display name among the live.
        Two live objects of that name are refused (which one is meant cannot be told), and
        where no live one has it but a retired one does (an archived journey), that is
        refused too: creating a new one would bring back what somebody retired."""
        if not self.id_field:
            return await self.get_by_id(c, key)
        named = [i for i in await self.list(c) if getattr(i, self.key_field) == key]
        live = [i for i in named if self.live(i)]
        if len(live) > 1:
            ids = ", ".join(getattr(i, self.id_field) for i in live)
            raise AmbiguousName(f"{len(live)} {self.name.lower()}s are named {key!r} ({ids}); "
                                f"add `{self.id_field}: <id>` to the manifest to say which")
        if not live and named:
            raise Retired(named[0], f"{self.name}/{key} is archived "
                          f"({self.id_field} {getattr(named[0], self.id_field)}); apply with "
                          "--recreate to create a new one of that name")
        return live[0] if live else None

    def resource_id(self, item: Any) -> str:
        """The id :meth:`get_by_id` takes: the service-given id, else the resource name's."""
        return str(getattr(item, self.id_field)) if self.id_field else item.name.split("/", 1)[1]

    async def get_by_id(self, c: Client, resource_id: str) -> Message | None:
        reply = await _missing_is_none(self._call(c, "Get", self._request(
            "Get", name=f"{self.collection}/{resource_id}")))
        found: Message | None = getattr(reply, self.field) if reply is not None else None
        return found

    async def find(self, c: Client, spec: dict[str, Any]) -> Message | None:
        """The stored object ``spec`` describes: by its service-given id when it has one (and
        that object still exists), else by its key."""
        resource_id = str(spec.get(self.id_field, "")) if self.id_field else ""
        if resource_id:
            try:
                found = await self.get_by_id(c, resource_id)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:  # not an id at all
                    raise
                found = None
            if found is not None:
                if not self.live(found):
                    raise Retired(found, f"{self.name}/{self.key_of(spec)} is archived "
                                  f"({self.id_field} {resource_id}); remove `{self.id_field}` "
                                  "and apply with --recreate to create a new one")
                return found
        return await self.get(c, self.key_of(spec))

    async def lookup(self, c: Client, name: str) -> Message | None:
        """What a person names on the command line: an id or a key (a display name); an
        archived journey is shown as it is."""
        try:
            return await self.find(c, {self.key_field: name, self.id_field: name}
                                   if self.id_field else {self.key_field: name})
        except Retired as exc:
            found: Message = exc.stored
            return found

    async def create(self, c: Client, item: Message, rid: str) -> Message:
        reply = await self._call(c, "Create", self._request(
            "Create", **{self.field: item, "request_id": rid}))
        created: Message = getattr(reply, self.field)
        return created

    async def update(self, c: Client, stored: Any, item: Any, paths: list[str],
                     rid: str) -> Message:
        item.name = stored.name
        fields: dict[str, Any] = {self.field: item, "request_id": rid}
        if self.masked:
            fields["update_mask"] = field_mask_pb2.FieldMask(paths=paths)
        reply = await self._call(c, "Update", self._request("Update", **fields))
        updated: Message = getattr(reply, self.field)
        return updated

    async def list(self, c: Client) -> list[Message]:
        plural = self.plural or f"{self.field}s"
        if not self.paged:
            return list(getattr(await self._call(c, "List", self._list_request(), "s"),
                                plural))
        items: list[Message] = []
        token = ""
        while True:
            reply = await self._call(c, "List", self._list_request(page_size=100,
                                                                   page_token=token), "s")
            items.extend(getattr(reply, plural))
            token = reply.next_page_token
            if not token:
                return items

    def _list_request(self, **fields: Any) -> Message:
        request: Message = getattr(self.rpc, f"List{self.resource}sRequest")(**fields)
        return request


async def publish_content(c: Client, item: Any, rid: str) -> Message:
    # Journeys and actions render published versions only: applied content is published.
    await c.content.PublishContentItem(content_pb.PublishContentItemRequest(
        name=item.name, request_id=f"{rid}-publish"), metadata=c.metadata)
    published: Message = item
    return published


async def publish_journey(c: Client, journey: Any, rid: str) -> Message:
    reply = await c.orchestration.PublishJourney(orch_pb.PublishJourneyRequest(
        name=journey.name, request_id=f"{rid}-publish"), metadata=c.metadata)
    published: Message = reply.journey
    return published


def _not_archived(journey: Any) -> bool:
    # An archived journey of that name is history, not the one to update.
    return bool(journey.state != journey_pb2.JOURNEY_STATE_ARCHIVED)


def journey_unpublished(journey: Any) -> bool:
    """Whether the journey's draft holds what no published version has: never published, or
    a draft that differs from the latest version (an apply that changed it and whose publish
    failed, or that was run without publishing), so an apply that publishes publishes it. A
    paused journey is never published by an apply (see :func:`journey_paused`)."""
    return bool(journey.published_version == 0 or journey.unpublished_changes)


def journey_paused(journey: Any) -> bool:
    """Publishing resumes a journey: an operator's pause stands until they resume it."""
    return bool(journey.state == journey_pb2.JOURNEY_STATE_PAUSED)


# What orchestration stores for a journey's fields left unset (see `Kind.defaults`).
JOURNEY_DEFAULTS: Mapping[str, Any] = {
    "re_entry": "RE_ENTRY_POLICY_NEVER",
    "re_entry_cooldown": "0s",
    "nodes.send.on_failure": "FAILURE_POLICY_EXIT",
    "nodes.decide.on_failure": "FAILURE_POLICY_EXIT",
    "nodes.wait.best_time.max_delay": "86400s"}


def _content_unpublished(item: Any) -> bool:
    # Applied content is published; a draft left unpublished is a change to make.
    return bool(item.latest_version == 0)


KIND_TABLE: dict[str, Kind] = {k.name: k for k in (
    Kind("Content", content_item_pb2.ContentItem, "key", "content", content_pb, "ContentItem",
         "content_item", "contentItems", publish=publish_content, always_publish=True,
         unpublished=_content_unpublished),
    # UpdateSnippet replaces the snippet's source: no mask.
    Kind("Snippet", content_item_pb2.Snippet, "key", "content", content_pb, "Snippet",
         "snippet", "snippets", masked=False),
    Kind("Segment", segment_pb2.Segment, "segment_id", "identity", identity_pb, "Segment",
         "segment", "segments"),
    Kind("Provider", provider_pb2.Provider, "display_name", "delivery", delivery_pb, "Provider",
         "provider", "providers", id_field="provider_id", paged=False),
    Kind("Action", action_pb2.Action, "key", "decisioning", dec_pb, "Action", "action",
         "actions"),
    Kind("DecisionPoint", decision_point_pb2.DecisionPoint, "key", "decisioning", dec_pb,
         "DecisionPoint", "decision_point", "decisionPoints",
         defaults={"arbitration": {}, "model": {}, "exposure": "EXPOSURE_MODE_REPORTED",
                   "exploration": {"method": "EXPLORATION_METHOD_THOMPSON"}}),
    Kind("Journey", journey_pb2.Journey, "display_name", "orchestration", orch_pb, "Journey",
         "journey", "journeys", id_field="journey_id", publish=publish_journey,
         unpublished=journey_unpublished, live=_not_archived, paused=journey_paused,
         defaults=JOURNEY_DEFAULTS),
)}


# --- settings: one of each per workspace ---------------------------------------------------------


@dataclass(frozen=True)
class SettingsPart:
    """A workspace-wide settings object a Settings manifest can hold under ``section``: read
    with `Get<resource>`, written with `Update<resource>` (the whole object, and a mask where
    the RPC takes one)."""

    section: str
    message: type[Message]
    service: str
    rpc: ModuleType
    resource: str
    field: str  # the object's field in the request and the response
    masked: bool
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # as Kind.defaults

    def _call(self, c: Client, verb: str, **fields: Any) -> Awaitable[Any]:
        method: Callable[..., Awaitable[Any]] = getattr(getattr(c, self.service),
                                                        f"{verb}{self.resource}")
        request = getattr(self.rpc, f"{verb}{self.resource}Request")(**fields)
        return method(request, metadata=c.metadata)

    async def get(self, c: Client) -> Message:
        got: Message = getattr(await self._call(c, "Get"), self.field)
        return got

    async def put(self, c: Client, merged: Message, paths: list[str], rid: str) -> Message:
        fields: dict[str, Any] = {self.field: merged, "request_id": rid}
        if self.masked:
            fields["update_mask"] = field_mask_pb2.FieldMask(paths=paths)
        got: Message = getattr(await self._call(c, "Update", **fields), self.field)
        return got


SETTINGS_PARTS: dict[str, SettingsPart] = {p.section: p for p in (
    SettingsPart("identity", identity_settings_pb2.IdentitySettings, "identity", identity_pb,
                 "IdentitySettings", "settings", masked=False, defaults={
                     "identifier_types": [{"type": "user_id", "limit": 1}],
                     "identity_verification": {},
                     "consent_defaults": [
                         {"channel": "CHANNEL_EMAIL"}, {"channel": "CHANNEL_SMS", "opt_in": True},
                         {"channel": "CHANNEL_PUSH"}, {"channel": "CHANNEL_IN_APP"},
                         {"channel": "CHANNEL_WEBHOOK"}]}),
    SettingsPart("content", content_item_pb2.ContentSettings, "content", content_pb,
                 "ContentSettings", "content_settings", masked=True),
    SettingsPart("delivery_policy", policy_pb2.DeliveryPolicy, "delivery", delivery_pb,
                 "DeliveryPolicy", "policy", masked=False),
)}
