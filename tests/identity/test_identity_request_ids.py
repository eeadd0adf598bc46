"""Every mutating RPC with a request_id answers concurrent repeats with the first answer, and its
effect happens once: eight identical calls at once, through the real gRPC server, on both
backends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from identity_support import Identity, Recorder, event, rpc_error
from sqlalchemy import func, select

from cjo.identity.v1 import backfill_pb2, identity_settings_pb2, segment_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo_identity.adapters.tables import api_keys
from support import SERVICE_TOKEN, bearer, eventually, same_answer_to_concurrent_repeats

Metadata = tuple[tuple[str, str], ...]
TIMES = 8


@dataclass(frozen=True)
class Call:
    method: Callable[..., Any]
    request: Any
    metadata: Metadata


@dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[Identity], Awaitable[Call]]
    # Checks the effect happened once, given the first answer.
    happened_once: Callable[[Identity, Recorder, Call, Any], Awaitable[None]]
    # Makes the request a different one (to send with the same request id).
    change: Callable[[Any], None]
    reveals_secret: bool = False


async def forwarded(identity: Identity, recorder: Recorder, name: str) -> int:
    """How many events named ``name`` orchestration received, once the outbox is drained."""
    await eventually(lambda: _drained(identity))
    return sum(1 for e in recorder.events if e.event.name == name)


async def _drained(identity: Identity) -> bool:
    return await identity.outbox_rows() == 0


async def key_count(identity: Identity, workspace_id: str) -> int:
    def count() -> int:
        with identity.app.db.transaction() as session:
            return int(session.execute(select(func.count()).select_from(api_keys).where(
                api_keys.c.workspace_id == workspace_id)).scalar_one())
    return await identity.app.db.run(count)


async def with_people(identity: Identity) -> Metadata:
    acme = await identity.new_workspace("acme")
    reply = await identity.events.IngestEvents(pb.IngestEventsRequest(events=[
        event(f"m{n}", ("user_id", f"u{n}"), traits={"plan": "pro"}) for n in range(3)]),
        metadata=acme)
    assert {r.status.code for r in reply.results} == {0}
    return acme


async def update_settings(identity: Identity) -> Call:
    acme = await identity.new_workspace("acme")
    return Call(identity.events.UpdateIdentitySettings, pb.UpdateIdentitySettingsRequest(
        settings=identity_settings_pb2.IdentitySettings(default_phone_region="DE"),
        request_id="settings-1"), acme)


async def settings_saved(identity: Identity, recorder: Recorder, call: Call,
                         first: pb.UpdateIdentitySettingsResponse) -> None:
    stored = await identity.events.GetIdentitySettings(pb.GetIdentitySettingsRequest(),
                                                       metadata=call.metadata)
    assert stored.settings == first.settings
    assert stored.settings.default_phone_region == "DE"


async def create_segment(identity: Identity) -> Call:
    acme = await with_people(identity)
    return Call(identity.events.CreateSegment, pb.CreateSegmentRequest(
        segment=segment_pb2.Segment(segment_id="pros", condition='traits.plan == "pro"'),
        request_id="segment-1"), acme)


async def segment_entered_once(identity: Identity, recorder: Recorder, call: Call,
                               first: pb.CreateSegmentResponse) -> None:
    # The answer comes before the backfill: the members enter in the background, once.
    assert first.segment.backfill.state == backfill_pb2.BACKFILL_STATE_PENDING
    assert (await identity.backfilled(call.metadata, "pros")).member_count == 3
    assert await forwarded(identity, recorder, "segment_entered") == 3


async def with_segment(identity: Identity) -> Metadata:
    acme = await with_people(identity)
    await identity.events.CreateSegment(pb.CreateSegmentRequest(segment=segment_pb2.Segment(
        segment_id="pros", condition='traits.plan == "pro"')), metadata=acme)
    await identity.backfilled(acme, "pros")
    return acme


async def update_segment(identity: Identity) -> Call:
    acme = await with_segment(identity)
    return Call(identity.events.UpdateSegment, pb.UpdateSegmentRequest(
        segment=segment_pb2.Segment(name="segments/pros", condition='traits.plan == "free"'),
        update_mask=field_mask_pb2.FieldMask(paths=["condition"]), request_id="update-1"), acme)


async def segment_exited_once(identity: Identity, recorder: Recorder, call: Call,
                              first: pb.UpdateSegmentResponse | pb.DeleteSegmentResponse
                              ) -> None:
    if isinstance(first, pb.UpdateSegmentResponse):  # the members leave in the background
        await identity.backfilled(call.metadata, "pros")
    assert await forwarded(identity, recorder, "segment_exited") == 3


async def delete_segment(identity: Identity) -> Call:
    acme = await with_segment(identity)
    return Call(identity.events.DeleteSegment, pb.DeleteSegmentRequest(
        name="segments/pros", request_id="delete-1"), acme)


async def delete_profile(identity: Identity) -> Call:
    acme = await with_people(identity)
    profile = await identity.events.LookupProfile(pb.LookupProfileRequest(
        identifier=event("x", ("user_id", "u0")).identifiers[0]), metadata=acme)
    return Call(identity.events.DeleteProfile, pb.DeleteProfileRequest(
        name=profile.profile.name, request_id="erase-1"), acme)


async def erased_once(identity: Identity, recorder: Recorder, call: Call,
                      first: pb.DeleteProfileResponse) -> None:
    assert await forwarded(identity, recorder, "profile_deleted") == 1


async def create_workspace(identity: Identity) -> Call:
    return Call(identity.workspaces.CreateWorkspace, ws_pb.CreateWorkspaceRequest(
        workspace_id="acme", display_name="Acme", request_id="ws-1"), bearer(SERVICE_TOKEN))


async def one_workspace(identity: Identity, recorder: Recorder, call: Call,
                        first: ws_pb.CreateWorkspaceResponse) -> None:
    assert first.workspace.workspace_id == "acme"
    assert await key_count(identity, "acme") == 1


async def create_api_key(identity: Identity) -> Call:
    acme = await identity.new_workspace("acme")
    return Call(identity.workspaces.CreateApiKey, ws_pb.CreateApiKeyRequest(
        display_name="rotation", request_id="key-1"), acme)


async def one_more_key(identity: Identity, recorder: Recorder, call: Call,
                       first: ws_pb.CreateApiKeyResponse) -> None:
    assert first.api_key.display_name == "rotation"
    assert await key_count(identity, "acme") == 2  # the workspace's default key and this one


def renamed(request: Any) -> None:
    request.display_name = "another"


CASES = [
    Case("UpdateIdentitySettings", update_settings, settings_saved,
         lambda r: setattr(r.settings, "default_phone_region", "FR")),
    Case("CreateSegment", create_segment, segment_entered_once,
         lambda r: setattr(r.segment, "display_name", "another")),
    Case("UpdateSegment", update_segment, segment_exited_once,
         lambda r: setattr(r.segment, "display_name", "another")),
    Case("DeleteSegment", delete_segment, segment_exited_once,
         lambda r: setattr(r, "name", "segments/another")),
    Case("DeleteProfile", delete_profile, erased_once,
         lambda r: setattr(r, "block_identifiers", True)),
    Case("CreateWorkspace", create_workspace, one_workspace, renamed, reveals_secret=True),
    Case("CreateApiKey", create_api_key, one_more_key, renamed, reveals_secret=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
async def test_concurrent_repeats_of_a_request_id_get_the_first_answer(
        identity: Identity, recorder: Recorder, case: Case) -> None:
    call = await case.prepare(identity)
    if case.reveals_secret:
        answers = await asyncio.gather(*(call.method(call.request, metadata=call.metadata)
                                         for _ in range(TIMES)))
        # The secret is in the answer of the call that created the key, and in no other.
        assert sum(1 for a in answers if a.api_key.secret) == 1
        for answer in answers:
            answer.api_key.secret = ""
        first = answers[0]
        assert all(answer == first for answer in answers), answers
    else:
        first = await same_answer_to_concurrent_repeats(call.method, call.request,
                                                        call.metadata, times=TIMES)
    await case.happened_once(identity, recorder, call, first)
    # A later repeat still gets the first answer (the secret never again).
    again = await call.method(call.request, metadata=call.metadata)
    assert again == first
    other = type(call.request)()
    other.CopyFrom(call.request)
    case.change(other)
    reused = await rpc_error(call.method(other, metadata=call.metadata))
    assert reused.code() == grpc.StatusCode.FAILED_PRECONDITION
