"""A client in another language: examples/node/first_journey.js (grpc-js + proto-loader reading
protos/) runs the first journey against the five services as processes, the email arrives at the
SMTP server, the script decodes the rich error of a bad request from its trailer, and a Struct
written in the protos' spelling is refused naming the field (not stored as null)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from email import message_from_bytes, policy
from pathlib import Path

import grpc
import pytest

from cjo.identity.v1 import workspace_service_pb2 as ws_pb
from cjo.identity.v1 import workspace_service_pb2_grpc as ws_grpc
from cjo_platform.rpc.validation import NO_KIND_RULE
from suite import SERVICES, running_suite
from support import SERVICE_TOKEN, Backend, bearer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "node"
# node_modules is kept between runs and reinstalled only when the lock file changes: `npm ci`
# takes ~20 s and the registry, every time otherwise.
INSTALLED_STAMP = EXAMPLE / "node_modules" / ".cjo-package-lock.sha256"


def node_modules() -> None:
    # Node.js is on every CI machine: without it this test fails rather than passing unrun.
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    assert not missing, f"{' and '.join(missing)} not installed: the Node example cannot run"
    lock = hashlib.sha256((EXAMPLE / "package-lock.json").read_bytes()).hexdigest()
    if INSTALLED_STAMP.is_file() and INSTALLED_STAMP.read_text() == lock:
        return
    result = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    INSTALLED_STAMP.write_text(lock)


async def test_node_example_runs_the_first_journey_and_decodes_a_rich_error(
        sqlite_backend: Backend, tmp_path: Path) -> None:
    await asyncio.to_thread(node_modules)
    async with running_suite(sqlite_backend, tmp_path) as suite:
        async with grpc.aio.insecure_channel(suite.target("identity")) as channel:
            reply = await ws_grpc.WorkspaceServiceStub(channel).CreateWorkspace(
                ws_pb.CreateWorkspaceRequest(workspace_id="node", display_name="node"),
                metadata=bearer(SERVICE_TOKEN))
        env = {**os.environ, "CJO_API_KEY": reply.api_key.secret,
               **{f"CJO_{n.upper()}_TARGET": suite.target(n) for n in SERVICES}}
        proc = await asyncio.create_subprocess_exec(
            "node", "first_journey.js", cwd=EXAMPLE, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output = (await asyncio.wait_for(proc.communicate(), 90))[0].decode()
        assert proc.returncode == 0, output + suite.log("orchestration")

        # The traits were built as Structs that survive the wire: the email went out to the
        # address in them, rendered with the first name and the event's plan.
        assert len(suite.mail.envelopes) == 1, output
        envelope = suite.mail.envelopes[0]
        (recipient,) = envelope.rcpt_tos
        assert recipient.startswith("user-") and recipient.endswith("@example.com")
        mail = message_from_bytes(envelope.original_content or envelope.content,
                                  policy=policy.default)
        assert mail["subject"] == "Welcome to Acme, Ada!"
        assert "Thanks for choosing the pro plan." in mail.get_body(("html",)).get_content()
        assert "ENROLLMENT_STATE_COMPLETED" in output and "MESSAGE_STATUS_SENT" in output

        # The trap the example warns about is real with this proto-loader: a snake_case Value is
        # sent with no kind, and the server refuses it (a BadRequest naming the trait, decoded
        # from the event's own status) instead of storing null.
        assert "struct:   {string_value: ...} refused: INVALID_ARGUMENT" in output, output
        assert f"BadRequest events[0].traits.email: {NO_KIND_RULE}" in output, output

        # The rich error, decoded in Node from grpc-status-details-bin.
        assert "error:    INVALID_ARGUMENT" in output, output
        assert "ErrorInfo reason=INVALID_ARGUMENT domain=orchestration.cjo" in output, output
        assert "BadRequest journey.nodes[0].send.content_key:" in output, output
        assert "BadRequest journey.nodes[0].send.channel:" in output, output
