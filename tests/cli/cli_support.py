"""Running the `cjo` command against a suite: as a separate process, as a person would."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc

from cjo.identity.v1 import event_pb2, profile_pb2
from cjo.identity.v1 import identity_service_pb2 as id_pb
from cjo.identity.v1 import identity_service_pb2_grpc as id_grpc
from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from suite import SERVICES, Suite
from support import SERVICE_TOKEN, bearer, operator_environ

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cjo:
    env: dict[str, str]
    cwd: Path

    async def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                       **env: str) -> subprocess.CompletedProcess[str]:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "cjo_cli.main", *args],
            env={**self.env, **env}, cwd=self.cwd, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"cjo {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done


async def new_workspace(suite: Suite, workspace_id: str) -> str:
    async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
        reply = await ws_grpc.WorkspaceServiceStub(channel).CreateWorkspace(
            ws_pb.CreateWorkspaceRequest(workspace_id=workspace_id),
            metadata=bearer(SERVICE_TOKEN))
        return str(reply.api_key.secret)


def cjo_for(suite: Suite, key: str, home: Path) -> Cjo:
    """The command with the suite's endpoints and ``key`` in its environment, and a config
    directory of its own."""
    env = operator_environ()
    env.update({f"CJO_{s.upper()}_TARGET": suite.target(s) for s in SERVICES})
    env.update({"CJO_API_KEY": key, "XDG_CONFIG_HOME": str(home), "COLUMNS": "200"})
    return Cjo(env, REPO)


async def lookup(suite: Suite, key: str, kind: str, value: str) -> profile_pb2.Profile:
    """The profile holding the identifier (``kind``, ``value``)."""
    async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
        return (await id_grpc.IdentityServiceStub(channel).LookupProfile(
            id_pb.LookupProfileRequest(identifier=event_pb2.Identifier(type=kind, value=value)),
            metadata=bearer(key))).profile


async def events_of_user(suite: Suite, key: str, user_id: str) -> list[event_pb2.Event]:
    """Every event of the profile holding ``user_id``, all pages."""
    parent = (await lookup(suite, key, "user_id", user_id)).name
    async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
        stub = id_grpc.IdentityServiceStub(channel)
        events: list[event_pb2.Event] = []
        token = ""
        while True:
            reply = await stub.ListProfileEvents(id_pb.ListProfileEventsRequest(
                parent=parent, page_size=1000, page_token=token), metadata=bearer(key))
            events.extend(e.event for e in reply.events)
            token = reply.next_page_token
            if not token:
                return events
