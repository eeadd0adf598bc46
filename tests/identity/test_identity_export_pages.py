"""A long history exports whole: ExportProfile answers in pages of at most 16 MiB of JSON and
`cjo profile export` writes them all; ListProfileEvents pages are bounded by bytes as well as
by count. 200 events of 200 KB (40 MB) used to fail both with RESOURCE_EXHAUSTED (past the
32 MiB message limit), and the export could never be made."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.protobuf import struct_pb2
from identity_support import EmptyDecisioning, Identity, cli_profile_export

from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dc_grpc
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as pb
from cjo.identity.v1 import identity_service_pb2_grpc as pb_grpc

EVENTS = 200
NOTE = 200_000
MESSAGE_LIMIT = 32 * 1024 * 1024  # every cjo channel's
REPO = Path(__file__).resolve().parents[2]


async def test_a_history_past_the_message_limit_exports_whole(identity: Identity,
                                                              tmp_path: Path) -> None:
    metadata = await identity.new_workspace("acme")
    limits = [("grpc.max_receive_message_length", MESSAGE_LIMIT),
              ("grpc.max_send_message_length", MESSAGE_LIMIT)]
    async with grpc.aio.insecure_channel(identity.address, options=limits) as channel:
        stub = pb_grpc.IdentityServiceStub(channel)
        for batch in range(EVENTS // 50):
            notes = []
            for i in range(50):
                properties = struct_pb2.Struct()
                properties.update({"note": f"{batch}-{i}-".ljust(NOTE, "y")})
                notes.append(event_pb2.Event(
                    message_id=f"m{batch * 50 + i}", type=event_pb2.EVENT_TYPE_TRACK,
                    name="note_added", properties=properties,
                    identifiers=[event_pb2.Identifier(type="user_id", value="ada")]))
            reply = await stub.IngestEvents(pb.IngestEventsRequest(events=notes),
                                            metadata=metadata)
            assert [r.status.code for r in reply.results] == [0] * 50
        name = (await stub.LookupProfile(pb.LookupProfileRequest(
            identifier=event_pb2.Identifier(type="user_id", value="ada")),
            metadata=metadata)).profile.name

        listed: list[str] = []
        token = ""
        while True:
            page = await stub.ListProfileEvents(pb.ListProfileEventsRequest(
                parent=name, page_size=1000, page_token=token), metadata=metadata)
            assert 0 < page.ByteSize() < MESSAGE_LIMIT // 2 + NOTE * 2
            listed += [e.event.message_id for e in page.events]
            token = page.next_page_token
            if not token:
                break
        assert sorted(listed) == sorted(f"m{n}" for n in range(EVENTS))

        pages: list[dict[str, object]] = []
        token = ""
        while True:
            exported = await stub.ExportProfile(pb.ExportProfileRequest(
                name=name, page_token=token), metadata=metadata)
            assert len(exported.json) <= MESSAGE_LIMIT // 2
            pages.append(json.loads(exported.json))
            token = exported.next_page_token
            if not token:
                break
    assert len(pages) > 1
    assert [sorted(p) for p in pages] == [["events", "profile"]] + [["events"]] * (len(pages) - 1)
    exported_ids = [e["event"]["messageId"] for p in pages for e in p["events"]]  # type: ignore
    assert exported_ids == listed  # newest first, each once

    # The command writes every page into one document.
    server = grpc.aio.server()
    dc_grpc.add_DecisioningServiceServicer_to_server(EmptyDecisioning(), server)
    decisioning = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        done = await cli_profile_export("user_id:ada", metadata[0][1].removeprefix("Bearer "),
                                        identity.address, decisioning, tmp_path / "config",
                                        timeout=240)
    finally:
        await server.stop(None)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert document["profile"]["name"] == name
    assert [e["event"]["messageId"] for e in document["events"]] == listed
    assert document["decisioning"] == {"decisions": [], "sendTimes": []}
