"""The shared validation layer: what no service can store (NUL characters, out-of-range
timestamps and durations, NaN, too deep nesting, undecodable bytes) is INVALID_ARGUMENT naming
the field, through real gRPC servers on both backends, with nothing written; a batch's bad item
fails alone."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor
from grpc_status import rpc_status

from cjo.analytics.v1 import analytics_service_pb2
from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_service_pb2
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as delivery_grpc
from cjo.delivery.v1 import provider_pb2
from cjo.identity.v1 import event_pb2, identity_settings_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_service_pb2_grpc as pb_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo.orchestration.v1 import orchestration_service_pb2
from cjo_delivery.bootstrap import build as build_delivery
from cjo_identity.bootstrap import build as build_identity
from cjo_platform.config import Env
from cjo_platform.errors import InvalidArgument
from cjo_platform.rpc import validation
from cjo_platform.rpc.status import error_reason, field_violations
from support import SERVICE_TOKEN, Backend, as_service, bearer, free_port, serving, settings_for

Metadata = tuple[tuple[str, str], ...]
NUL = "must not contain the NUL character (U+0000)"
KEY_NUL = "key must not contain the NUL character (U+0000)"
FINITE = "must be a finite number (not NaN or Infinity)"


# --- the rules, without a server --------------------------------------------------------------


def _event(**fields: object) -> event_pb2.Event:
    item = event_pb2.Event(message_id="m1", type=event_pb2.EVENT_TYPE_TRACK, name="viewed",
                           identifiers=[event_pb2.Identifier(type="user_id", value="u1")])
    for name, value in fields.items():
        if name in ("properties", "traits"):
            getattr(item, name).update(value)
        elif name == "timestamp":
            item.timestamp.CopyFrom(value)
        else:
            setattr(item, name, value)
    return item


def _found(message: object, **options: str) -> dict[str, str]:
    assert isinstance(message, validation.Message)
    return {v.field: v.description for v in validation.violations(message, **options)}


def test_paths_name_the_exact_field() -> None:
    request = pb.IngestEventsRequest(events=[_event(), _event(
        message_id="a\x00b",
        properties={"price": math.nan, "odd key": "x\x00", "tags": ["a", "b\x00"],
                    "nested": {"deep": -math.inf}, "k\x00": 1})])
    request.events[1].identifiers.add(type="email", value="\x00")
    assert _found(request) == {
        "events[1].message_id": NUL,
        "events[1].identifiers[1].value": NUL,
        "events[1].properties.price": FINITE,
        'events[1].properties["odd key"]': NUL,
        "events[1].properties.tags[1]": NUL,
        "events[1].properties.nested.deep": FINITE,
        'events[1].properties["k\\u0000"]': KEY_NUL,
    }
    # The interceptor leaves a batch's items to the batch.
    assert _found(request, skip="events") == {}


def test_a_value_without_a_kind_is_refused_and_null_value_is_not() -> None:
    event = _event(properties={"gone": None, "tags": ["a", None], "ok": {"x": None}})
    event.properties.fields["missing"].CopyFrom(struct_pb2.Value())
    event.properties.fields["tags"].list_value.values.add()
    event.properties.fields["ok"].struct_value.fields["y"].CopyFrom(struct_pb2.Value())
    assert _found(pb.IngestEventsRequest(events=[event])) == {
        "events[0].properties.missing": validation.NO_KIND_RULE,
        "events[0].properties.tags[2]": validation.NO_KIND_RULE,
        "events[0].properties.ok.y": validation.NO_KIND_RULE,
    }


def test_map_keys_and_values() -> None:
    provider = provider_pb2.Provider(config={"host": "a\x00", "a\x00b": "x"})
    assert _found(delivery_pb.CreateProviderRequest(provider=provider)) == {
        "provider.config[host]": NUL,
        'provider.config["a\\u0000b"]': KEY_NUL,
    }


@pytest.mark.parametrize(("seconds", "nanos", "valid"), [
    (-62_135_596_800, 0, True),           # 0001-01-01T00:00:00Z
    (253_402_300_799, 999_999_999, True),  # 9999-12-31T23:59:59.999999999Z
    (-62_135_596_801, 0, False),
    (253_402_300_800, 0, False),
    (2**63 - 1, 0, False),
    (0, -1, False),
    (0, 1_000_000_000, False),
])
def test_timestamps_within_the_protobuf_range(seconds: int, nanos: int, valid: bool) -> None:
    request = pb.IngestEventsRequest(events=[_event(
        timestamp=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))])
    assert (_found(request) == {}) is valid
    if not valid:
        assert "events[0].timestamp" in _found(request)


@pytest.mark.parametrize(("seconds", "nanos", "valid"), [
    (315_576_000_000, 999_999_999, True),
    (-315_576_000_000, -999_999_999, True),
    (0, -5, True),
    (315_576_000_001, 0, False),
    (-(2**63), 0, False),
    (1, -1, False),     # nanos of the other sign
    (-1, 1, False),
    (0, 1_000_000_000, False),
])
def test_durations_within_the_protobuf_range(seconds: int, nanos: int, valid: bool) -> None:
    settings = identity_settings_pb2.IdentitySettings(computed_traits=[
        identity_settings_pb2.ComputedTrait(
            name="orders", window=duration_pb2.Duration(seconds=seconds, nanos=nanos))])
    found = _found(pb.UpdateIdentitySettingsRequest(settings=settings))
    assert (found == {}) is valid
    if not valid:
        assert found == {"settings.computed_traits[0].window": validation.DURATION_RULE}


def _nested(levels: int) -> struct_pb2.Struct:
    struct = struct_pb2.Struct(fields={"leaf": struct_pb2.Value(string_value="x")})
    for _ in range(levels - 1):
        struct = struct_pb2.Struct(fields={"a": struct_pb2.Value(struct_value=struct)})
    return struct


def test_nesting_is_bounded() -> None:
    # request (1) > event (2) > properties (3) ...: 30 Struct levels fit in 32.
    fits = pb.IngestEventsRequest(events=[_event()])
    fits.events[0].properties.CopyFrom(_nested(30))
    assert _found(fits) == {}
    deep = pb.IngestEventsRequest(events=[_event()])
    deep.events[0].properties.CopyFrom(_nested(31))
    ((field, description),) = _found(deep).items()
    assert field.startswith("events[0].properties.a.a.")
    assert description == validation.NESTING_RULE


def test_a_batch_item_is_checked_on_its_own() -> None:
    with pytest.raises(InvalidArgument) as error:
        validation.check_item(_event(properties={"price": math.inf}))
    assert [(v.field, v.description) for v in error.value.violations] == [
        ("properties.price", FINITE)]
    with pytest.raises(InvalidArgument) as error:
        validation.check_item("profiles/\x00")  # an item of a repeated string field
    assert [v.field for v in error.value.violations] == [""]
    validation.check_item(_event(properties={"price": 3.5}))


@pytest.mark.parametrize(("request_type", "response_type", "items"), [
    (pb.IngestEventsRequest, pb.IngestEventsResponse, "events"),
    (pb.BatchGetProfilesRequest, pb.BatchGetProfilesResponse, "names"),
    (pb.BatchCheckConsentRequest, pb.BatchCheckConsentResponse, "queries"),
    (delivery_pb.BatchSendMessagesRequest, delivery_pb.BatchSendMessagesResponse, "requests"),
    (content_service_pb2.BatchRenderContentRequest,
     content_service_pb2.BatchRenderContentResponse, "requests"),
    (orchestration_service_pb2.HandleEventsRequest,
     orchestration_service_pb2.HandleEventsResponse, "events"),
    (analytics_service_pb2.RecordFactsRequest, analytics_service_pb2.RecordFactsResponse,
     "facts"),
    (delivery_pb.EraseProfilesRequest, delivery_pb.EraseProfilesResponse, ""),
    (pb.ListProfilesRequest, pb.ListProfilesResponse, ""),
])
def test_batch_rpcs_are_recognised_by_their_per_item_answers(
        request_type: type, response_type: type, items: str) -> None:
    request: Descriptor = request_type.DESCRIPTOR
    response: Descriptor = response_type.DESCRIPTOR
    assert validation.batch_items_field(request, response) == items


# --- through real servers ---------------------------------------------------------------------


@dataclass
class Identity:
    events: pb_grpc.IdentityServiceStub
    channel: grpc.aio.Channel
    metadata: Metadata


@pytest.fixture
async def identity(backend: Backend) -> AsyncIterator[Identity]:
    # Forwarded events stay in the outbox: nothing listens where orchestration would be.
    settings = settings_for("identity", backend,
                            CJO_ORCHESTRATION_TARGET=f"127.0.0.1:{free_port()}")
    async with (serving(build_identity(settings, Env({}))) as address,
                grpc.aio.insecure_channel(address) as channel):
        workspaces = ws_grpc.WorkspaceServiceStub(channel)
        created = await workspaces.CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id="acme"), metadata=bearer(SERVICE_TOKEN))
        yield Identity(pb_grpc.IdentityServiceStub(channel), channel,
                       bearer(created.api_key.secret))


async def _refused(call: object) -> tuple[dict[str, str], str]:
    """The field violations and reason of a call that must fail with INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    status = rpc_status.from_call(caught.value)
    assert status is not None
    return field_violations(status), error_reason(status)


async def _profiles(identity: Identity) -> int:
    page = await identity.events.ListProfiles(pb.ListProfilesRequest(), metadata=identity.metadata)
    return len(page.profiles)


async def test_nul_in_a_string_field_is_refused_and_nothing_is_written(
        identity: Identity) -> None:
    segment = segment_pb2.Segment(segment_id="vip", display_name="V\x00IP",
                                  condition="traits.plan == 'pro'")
    found, reason = await _refused(identity.events.CreateSegment(
        pb.CreateSegmentRequest(segment=segment, request_id="r\x001"),
        metadata=identity.metadata))
    assert found == {"segment.display_name": NUL, "request_id": NUL}
    assert reason == "INVALID_ARGUMENT"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await identity.events.GetSegment(pb.GetSegmentRequest(name="segments/vip"),
                                         metadata=identity.metadata)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_duration_out_of_range_is_refused_and_nothing_is_written(
        identity: Identity) -> None:
    settings = identity_settings_pb2.IdentitySettings(computed_traits=[
        identity_settings_pb2.ComputedTrait(
            name="orders", event_name="order_completed",
            aggregation=identity_settings_pb2.COMPUTED_AGGREGATION_COUNT,
            window=duration_pb2.Duration(seconds=2**63 - 1))])
    found, _ = await _refused(identity.events.UpdateIdentitySettings(
        pb.UpdateIdentitySettingsRequest(settings=settings), metadata=identity.metadata))
    assert found == {"settings.computed_traits[0].window": validation.DURATION_RULE}
    current = await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                        metadata=identity.metadata)
    assert not current.settings.computed_traits


async def test_bad_items_of_a_batch_fail_alone(identity: Identity) -> None:
    deep = _event(message_id="deep")
    deep.properties.CopyFrom(_nested(31))
    events = [
        _event(message_id="good", properties={"price": 3.5}),
        _event(message_id="nul\x00"),
        _event(message_id="nan", properties={"price": math.nan}),
        _event(message_id="inf", traits={"score": math.inf}),
        _event(message_id="key", properties={"a\x00": 1}),
        _event(message_id="late", timestamp=timestamp_pb2.Timestamp(seconds=253_402_300_800)),
        _event(message_id="nanos", timestamp=timestamp_pb2.Timestamp(seconds=1, nanos=-1)),
        deep,
        _event(message_id="no-kind"),
    ]
    # What protobufjs sends for {string_value: ...}: a Value with no kind (JSON null is
    # null_value), refused rather than stored as null.
    events[8].traits.fields["email"].CopyFrom(struct_pb2.Value())
    for index, item in enumerate(events):
        item.identifiers[0].value = f"someone-{index}"
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=events),
                                               metadata=identity.metadata)
    codes = [r.status.code for r in reply.results]
    assert codes == [0] + [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 8
    named = [set(field_violations(r.status)) for r in reply.results[1:]]
    assert named[:6] == [{"events[1].message_id"}, {"events[2].properties.price"},
                         {"events[3].traits.score"}, {'events[4].properties["a\\u0000"]'},
                         {"events[5].timestamp"}, {"events[6].timestamp"}]
    (too_deep,) = named[6]
    assert too_deep.startswith("events[7].properties.a.a.")
    assert field_violations(reply.results[8].status) == {
        "events[8].traits.email": validation.NO_KIND_RULE}
    assert await _profiles(identity) == 1  # only the good event's person


def _length_delimited(field: int, payload: bytes) -> bytes:
    def varint(n: int) -> bytes:
        out = b""
        while True:
            low, n = n & 0x7F, n >> 7
            if not n:
                return out + bytes([low])
            out += bytes([low | 0x80])
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def _raw_nested_struct(levels: int) -> bytes:
    """A Struct nested ``levels`` deep, encoded by hand: protobuf itself refuses to build what
    it could not decode."""
    encoded = _length_delimited(1, _length_delimited(1, b"leaf")
                                + _length_delimited(2, _length_delimited(3, b"x")))
    for _ in range(levels - 1):
        encoded = _length_delimited(1, _length_delimited(1, b"a")
                                    + _length_delimited(2, _length_delimited(5, encoded)))
    return encoded


@pytest.mark.parametrize("levels", [45, 120])
async def test_a_request_too_deep_to_decode_is_invalid(identity: Identity, levels: int) -> None:
    event = _event(message_id="deep").SerializeToString()
    request = _length_delimited(1, event + _length_delimited(5, _raw_nested_struct(levels)))
    ingest = identity.channel.unary_unary(
        "/cjo.identity.v1.IdentityService/IngestEvents",
        response_deserializer=pb.IngestEventsResponse.FromString)
    found, reason = await _refused(ingest(request, metadata=identity.metadata))
    assert reason == "REQUEST_NOT_DECODABLE"
    assert "" in found
    malformed = await _refused(ingest(b"\x0a\xff\xff", metadata=identity.metadata))
    assert malformed[1] == "REQUEST_NOT_DECODABLE"
    assert await _profiles(identity) == 0


async def test_an_unauthenticated_caller_learns_nothing_about_the_request(
        identity: Identity) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await identity.events.CreateSegment(pb.CreateSegmentRequest(request_id="\x00"),
                                            metadata=bearer("cjo_nokey_nosecret"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_nul_in_a_map_key_is_refused_and_nothing_is_written(backend: Backend) -> None:
    settings = settings_for("delivery", backend,
                            CJO_ANALYTICS_TARGET=f"127.0.0.1:{free_port()}",
                            CJO_IDENTITY_TARGET=f"127.0.0.1:{free_port()}")
    app = build_delivery(settings, Env({"CJO_SMTP_PORT": str(free_port()),
                                        "CJO_DELIVERY_CHECK_CONSENT": "false"}))
    workspace = as_service("ws-a")
    async with serving(app) as address, grpc.aio.insecure_channel(address) as channel:
        stub = delivery_grpc.DeliveryServiceStub(channel)
        provider = provider_pb2.Provider(
            channel=common_pb2.CHANNEL_SMS,
            kind=provider_pb2.PROVIDER_KIND_HTTP_JSON,
            config={"url": "https://sms.example/", "x\x00y": "1"}, secrets={"api_key": "k\x00"})
        found, _ = await _refused(stub.CreateProvider(
            delivery_pb.CreateProviderRequest(provider=provider), metadata=workspace))
        assert found == {'provider.config["x\\u0000y"]': KEY_NUL,
                         "provider.secrets[api_key]": NUL}
        listed = await stub.ListProviders(delivery_pb.ListProvidersRequest(), metadata=workspace)
        assert not listed.providers

        # A server-streaming call is checked before its first answer.
        stream = stub.SubscribeInbox(delivery_pb.SubscribeInboxRequest(profile_id="p\x00"),
                                     metadata=workspace)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream:
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(caught.value)
        assert status is not None and field_violations(status) == {"profile_id": NUL}
