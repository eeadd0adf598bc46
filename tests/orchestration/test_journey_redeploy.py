"""Deploying journeys from files again and again (`journeyfile apply --publish`, `cjo apply`):
an unchanged file changes and publishes nothing, whatever the server filled in or recorded; a
draft no version holds yet is published by the next deploy that publishes; a pause stands; an
edit made by someone else meanwhile is not overwritten."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2, json_format
from orchestration_support import clocked_transactions
from test_journeyfile import EXAMPLE, serving_the_example

from cjo.common.v1 import common_pb2
from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_cli.apply import apply
from cjo_cli.compare import compare
from cjo_cli.manifests import Manifest
from cjo_cli.resources import KIND_TABLE, settable
from cjo_client import Client, Endpoints
from cjo_orchestration import journeyfile
from cjo_orchestration.adapters import journeys as journey_store
from cjo_orchestration.adapters import stubs
from cjo_orchestration.api.convert import graph_from_proto, journey_to_proto
from cjo_orchestration.domain.journeys import Journey, JourneyState
from cjo_platform.clock import SystemClock
from support import SERVICE_TOKEN, Backend


def _left_at_defaults() -> journey_pb2.Journey:
    """The example with what the server fills in left unset: no re-entry policy, a send and a
    decide node without a failure policy, a best-time wait without max_delay."""
    journey = journeyfile.load(EXAMPLE)
    journey.ClearField("re_entry")
    journey.ClearField("re_entry_cooldown")
    journey.nodes[3].send.on_failure = journey_pb2.FAILURE_POLICY_UNSPECIFIED
    morning = journey.nodes[2]
    morning.wait.Clear()
    morning.wait.best_time.channel = common_pb2.CHANNEL_EMAIL
    morning.wait.next_node_id = "email"
    nudge = journey.nodes[5]
    nudge.ClearField("send")
    nudge.decide.decision_point = "cart_offer"
    nudge.decide.next_node_id = "done"
    return journey


async def _published(file: journey_pb2.Journey) -> journey_pb2.Journey:
    """``file`` applied with --publish; the file then names its journey, as after `export`."""
    first = await journeyfile._apply(file, publish=True)
    file.journey_id = first.journey_id
    return first


async def _versions_of_three_applies(file: journey_pb2.Journey) -> list[int]:
    return [(await journeyfile._apply(file, publish=True)).published_version for _ in range(3)]


def test_every_default_the_server_fills_in_is_no_difference() -> None:
    # What GetJourney returns for the file, compared as both deploy tools compare: the decide
    # node's failure policy and the best-time wait's max_delay were differences for ever.
    file = _left_at_defaults()
    now = datetime.now(UTC)
    stored = journey_to_proto(Journey(
        workspace_id="ws", journey_id="j1", display_name=file.display_name,
        state=JourneyState.ACTIVE, graph=graph_from_proto(file), published_version=1,
        revision=2, create_time=now, update_time=now, error_count=3, last_error="boom",
        last_error_time=now))
    desired = journeyfile.to_dict(file)
    assert compare(settable(stored), desired, KIND_TABLE["Journey"].defaults)[1] == []
    changed = journey_pb2.Journey()
    changed.CopyFrom(file)
    changed.nodes[5].decide.on_failure = journey_pb2.FAILURE_POLICY_CONTINUE
    assert compare(settable(stored), journeyfile.to_dict(changed),
                   KIND_TABLE["Journey"].defaults)[1] == ["nodes"]


async def test_recorded_errors_are_no_change_to_publish(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        first = await _published(a)
        with clocked_transactions(backend, SystemClock()) as tx:
            tx.run_sync(lambda uow: journey_store.record_errors(
                uow.session, {("ws-a", first.journey_id): (1, "branch.condition: boom")},
                datetime.now(UTC)))
        assert await _versions_of_three_applies(a) == [1, 1, 1]
        assert (await journeyfile._export(first.name)).etag == first.etag  # nothing written


async def test_defaults_left_unset_are_no_change_to_publish(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = _left_at_defaults()
        assert (await _published(a)).published_version == 1
        assert await _versions_of_three_applies(a) == [1, 1, 1]


async def test_a_draft_not_yet_published_is_published_by_the_next_publishing_apply(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        await _published(a)
        b = journey_pb2.Journey()
        b.CopyFrom(a)
        b.nodes[0].wait.event.timeout.FromSeconds(7200)
        # Applied without publishing (or its publish failed after the update worked).
        assert (await journeyfile._apply(b, publish=False)).published_version == 1
        after = await journeyfile._apply(b, publish=True)
        assert after.published_version == 2
        assert not after.unpublished_changes
        assert (await journeyfile._apply(b, publish=True)).published_version == 2


async def test_a_paused_journey_is_not_published_and_stays_paused(
        backend: Backend, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        first = await _published(a)
        async with grpc.aio.insecure_channel(os.environ["CJO_ORCHESTRATION_TARGET"]) as ch:
            await stubs.orchestration(ch).PauseJourney(pb.PauseJourneyRequest(
                name=first.name), metadata=journeyfile._metadata())
        a.nodes[0].wait.event.timeout.FromSeconds(7200)
        after = await journeyfile._apply(a, publish=True)
        assert (after.state, after.published_version) == (journey_pb2.JOURNEY_STATE_PAUSED, 1)
        assert after.nodes[0].wait.event.timeout.seconds == 7200  # the draft is updated
        assert after.unpublished_changes
        assert "is paused: its draft is not published" in capsys.readouterr().err


async def test_an_edit_made_meanwhile_is_refused_not_overwritten(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        first = await _published(a)
        a.display_name = "Mine"
        real = stubs.orchestration

        def editing_after_the_read(channel: grpc.aio.Channel) -> Any:
            stub = real(channel)
            get = stub.GetJourney

            async def read_then_someone_edits(request: Any, **kwargs: Any) -> Any:
                reply = await get(request, **kwargs)
                theirs = journey_pb2.Journey(name=request.name, display_name="Theirs")
                await stub.UpdateJourney(pb.UpdateJourneyRequest(
                    journey=theirs, update_mask=field_mask_pb2.FieldMask(
                        paths=["display_name"])), **kwargs)
                return reply

            stub.GetJourney = read_then_someone_edits
            return stub

        monkeypatch.setattr(stubs, "orchestration", editing_after_the_read)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await journeyfile._apply(a, publish=True)
        assert refused.value.code() == grpc.StatusCode.ABORTED
        monkeypatch.setattr(stubs, "orchestration", real)
        live = await journeyfile._export(first.name)
        assert (live.display_name, live.published_version) == ("Theirs", 1)


async def test_a_file_applied_before_the_upgrade_makes_no_second_journey(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        digest = hashlib.sha256(a.SerializeToString(deterministic=True)).hexdigest()[:32]
        async with grpc.aio.insecure_channel(os.environ["CJO_ORCHESTRATION_TARGET"]) as ch:
            earlier = (await stubs.orchestration(ch).CreateJourney(pb.CreateJourneyRequest(
                journey=journeyfile._settable(a), request_id=f"file-{digest}"),
                metadata=journeyfile._metadata())).journey
        assert (await journeyfile._apply(a, publish=False)).journey_id == earlier.journey_id


async def test_the_server_says_whether_the_draft_is_published(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        created = await journeyfile._apply(a, publish=False)
        assert created.unpublished_changes  # never published
        async with grpc.aio.insecure_channel(os.environ["CJO_ORCHESTRATION_TARGET"]) as ch:
            stub = stubs.orchestration(ch)
            meta = journeyfile._metadata()

            async def update(journey: journey_pb2.Journey, *paths: str) -> journey_pb2.Journey:
                journey.name = created.name
                reply = await stub.UpdateJourney(pb.UpdateJourneyRequest(
                    journey=journey, update_mask=field_mask_pb2.FieldMask(paths=paths)),
                    metadata=meta)
                changed: journey_pb2.Journey = reply.journey
                return changed

            published = (await stub.PublishJourney(pb.PublishJourneyRequest(
                name=created.name), metadata=meta)).journey
            assert not published.unpublished_changes
            # The display name is not versioned: live at once, nothing to publish.
            assert not (await update(journey_pb2.Journey(display_name="Renamed"),
                                     "display_name")).unpublished_changes
            edited = journey_pb2.Journey()
            edited.CopyFrom(a)
            edited.nodes[0].wait.event.timeout.FromSeconds(60)
            assert (await update(edited, "nodes")).unpublished_changes
            listed = (await stub.ListJourneys(pb.ListJourneysRequest(), metadata=meta)).journeys
            assert [j.unpublished_changes for j in listed] == [True]
            paused = (await stub.PauseJourney(pb.PauseJourneyRequest(name=created.name),
                                              metadata=meta)).journey
            assert paused.unpublished_changes
            back = journey_pb2.Journey()
            back.CopyFrom(a)
            assert not (await update(back, "nodes")).unpublished_changes  # as published


class _WorkspaceClient(Client):
    """A client speaking as workspace ws-a with the service token, as the test cluster wants."""

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return journeyfile._metadata()


def _cjo_client() -> _WorkspaceClient:
    """`cjo apply`'s client of the test cluster's orchestration."""
    return _WorkspaceClient(Endpoints(
        {"orchestration": os.environ["CJO_ORCHESTRATION_TARGET"]}), SERVICE_TOKEN)


async def test_cjo_apply_publishes_a_draft_it_left_unpublished(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving_the_example(backend, monkeypatch):
        spec = json_format.MessageToDict(journeyfile.load(EXAMPLE),
                                         preserving_proto_field_name=True)
        async with _cjo_client() as client:
            await apply(client, [Manifest("Journey", spec, "cart.yaml", publish=True)])
            spec["nodes"][0]["wait"]["event"]["timeout"] = "7200s"
            await apply(client, [Manifest("Journey", spec, "cart.yaml", publish=False)])
            # The same manifest, now with publishing: the draft no version holds is published.
            outcomes = await apply(client, [Manifest("Journey", spec, "cart.yaml",
                                                     publish=True)])
            assert [o.action for o in outcomes] == ["published"]
            found = await KIND_TABLE["Journey"].find(client, spec)
            assert found is not None and found.published_version == 2
            assert not found.unpublished_changes
            again = await apply(client, [Manifest("Journey", spec, "cart.yaml", publish=True)])
            assert [o.action for o in again] == ["unchanged"]


async def test_an_explicit_zero_cooldown_is_no_change_to_publish(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server does not keep a zero cooldown: compared as the file says, it was a change on
    # every apply, and every `apply --publish` published a new version.
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        a.re_entry = journey_pb2.RE_ENTRY_POLICY_NEVER
        a.re_entry_cooldown.FromSeconds(0)  # the default, spelled out
        assert (await _published(a)).published_version == 1
        assert await _versions_of_three_applies(a) == [1, 1, 1]
        spec = json_format.MessageToDict(a, preserving_proto_field_name=True)
        assert spec["re_entry_cooldown"] == "0s"
        spec.pop("journey_id")
        async with _cjo_client() as client:
            await apply(client, [Manifest("Journey", spec, "cart.yaml", publish=True)])
            again = await apply(client, [Manifest("Journey", spec, "cart.yaml", publish=True)])
            assert [o.action for o in again] == ["unchanged"]


async def test_an_unspecified_channel_in_a_preference_is_refused_naming_it(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # It was dropped: the stored list differed from the file's, a change on every deploy.
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        at = next(i for i, n in enumerate(a.nodes) if n.WhichOneof("kind") == "send")
        a.nodes[at].send.channel_preference[:] = [common_pb2.CHANNEL_EMAIL,
                                                  common_pb2.CHANNEL_UNSPECIFIED]
        field = f"nodes[{at}].send.channel_preference[1]"
        assert [v.field for v in journeyfile.problems(a)] == [field]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await journeyfile._apply(a, publish=True)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"journey.{field}" in (refused.value.details() or "")
        async with grpc.aio.insecure_channel(os.environ["CJO_ORCHESTRATION_TARGET"]) as ch:
            listed = await stubs.orchestration(ch).ListJourneys(
                pb.ListJourneysRequest(), metadata=journeyfile._metadata())
        assert list(listed.journeys) == []  # nothing written
        del a.nodes[at].send.channel_preference[1]
        first = await _published(a)
        a.nodes[at].send.channel_preference.append(common_pb2.CHANNEL_UNSPECIFIED)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await journeyfile._apply(a, publish=True)  # an update: refused the same way
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"journey.{field}" in (refused.value.details() or "")
        assert (await journeyfile._export(first.name)).etag == first.etag


async def test_an_archived_journey_is_not_published(
        backend: Backend, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        created = await journeyfile._apply(a, publish=False)
        a.journey_id = created.journey_id
        async with grpc.aio.insecure_channel(os.environ["CJO_ORCHESTRATION_TARGET"]) as ch:
            await stubs.orchestration(ch).ArchiveJourney(pb.ArchiveJourneyRequest(
                name=created.name), metadata=journeyfile._metadata())
        after = await journeyfile._apply(a, publish=True)
        assert (after.state, after.published_version) == (journey_pb2.JOURNEY_STATE_ARCHIVED, 0)
        assert "is archived: it is not published" in capsys.readouterr().err


async def test_a_publish_refused_after_the_update_says_the_draft_was_updated(
        backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        first = await _published(a)
        a.display_name = "Mine"
        path = tmp_path / "cart.yaml"
        path.write_text(journeyfile.dump(a))
        real = stubs.orchestration

        def publish_aborted(channel: grpc.aio.Channel) -> Any:
            stub = real(channel)

            async def aborted(request: Any, **kwargs: Any) -> Any:
                raise grpc.aio.AioRpcError(grpc.StatusCode.ABORTED, grpc.aio.Metadata(),
                                           grpc.aio.Metadata(), details="changed meanwhile")

            stub.PublishJourney = aborted
            return stub

        monkeypatch.setattr(stubs, "orchestration", publish_aborted)
        assert await asyncio.to_thread(journeyfile.main, ["apply", str(path), "--publish"]) == 1
        err = capsys.readouterr().err
        assert "the draft was updated but the journey changed while it was being published" in err
        assert "nothing was overwritten" not in err
        monkeypatch.setattr(stubs, "orchestration", real)
        assert (await journeyfile._export(first.name)).display_name == "Mine"
