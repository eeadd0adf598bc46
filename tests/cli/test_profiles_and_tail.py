"""`cjo profile show|export|erase`, `cjo tail messages`, `cjo funnel` and `cjo attribution`
against the services as processes; a refused key is said so, without the key."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from cjo.decisioning.v1 import decisioning_service_pb2 as dc_pb
from cjo.decisioning.v1 import decisioning_service_pb2_grpc as dc_grpc
from cli_support import cjo_for, new_workspace
from suite import running_suite
from support import Backend, bearer, eventually

pytestmark = pytest.mark.e2e


async def test_profile_show_erase_and_tail_a_sent_message(sqlite_backend: Backend,
                                                          tmp_path: Path) -> None:
    async with running_suite(sqlite_backend, tmp_path) as suite:
        key = await new_workspace(suite, "acme")
        cjo = cjo_for(suite, key, tmp_path / "config")
        # The mailbox provider points at the suite's SMTP server.
        provider = tmp_path / "manifests" / "provider.yaml"
        provider.parent.mkdir()
        provider.write_text(
            "kind: Provider\nspec:\n  display_name: Test mailbox\n  channel: CHANNEL_EMAIL\n"
            "  kind: PROVIDER_KIND_SMTP\n  config:\n    host: 127.0.0.1\n"
            f"    port: '{suite.env['CJO_SMTP_PORT']}'\n    from: shop@example.com\n")
        await cjo("apply", "-f", str(provider))
        await cjo("apply", "-f", "examples/snippets/")
        await cjo("apply", "-f", "examples/content/")
        await cjo("apply", "-f", "examples/journeys/thank_you.yaml")

        # Tail first: it prints the message the order below sends.
        tail = subprocess.Popen(
            [sys.executable, "-m", "cjo_cli.main", "tail", "messages", "--interval", "0.2",
             "--count", "1"], env=cjo.env, cwd=cjo.cwd, stdout=subprocess.PIPE, text=True)
        events = tmp_path / "orders.ndjson"
        events.write_text('{"name": "order_completed", "user_id": "ada", '
                          '"email": "ada@example.com", "total": 42}\n')
        profiles = tmp_path / "people.csv"
        profiles.write_text("user_id,email,first_name\nada,ada@example.com,Ada\n")
        await cjo("import", "profiles", str(profiles))
        await cjo("import", "events", str(events))
        try:
            printed, _ = await asyncio.to_thread(tail.communicate, timeout=60)
        finally:
            if tail.poll() is None:
                tail.kill()
        # tail prints the message as it first sees it (queued, sending or already sent) ...
        assert "ada@example.com" in printed, printed
        assert re.search(r"\b(QUEUED|SENDING|SENT)\b", printed), printed

        # ... and the mail really goes out.
        async def mailed() -> bool:
            return any("ada@example.com" in e.rcpt_tos for e in suite.mail.envelopes)

        await eventually(mailed, timeout=60)

        # Analytics counts the journey's step from the facts forwarded to it.
        async def funnel_counts_ada() -> str:
            out = (await cjo("funnel", "Thank buyers")).stdout
            return out if re.search(r"thank\s*│\s*1\s*│", out) else ""
        funnel = await eventually(funnel_counts_ada, timeout=60, interval=1)
        assert "version 1: 1 entered" in str(funnel), funnel
        attribution = await cjo("attribution")
        assert "LAST_TOUCH" in attribution.stdout, attribution.stdout

        shown = await cjo("profile", "show", "user_id:ada")
        assert "first_name" in shown.stdout and '"Ada"' in shown.stdout, shown.stdout
        assert "ada@example.com" in shown.stdout
        # The export holds what decisioning logged about Ada too.
        await cjo("apply", "-f", "examples/decisioning/")
        profile_id = json.loads((await cjo("profile", "show", "user_id:ada", "-o", "json")
                                 ).stdout)["name"].removeprefix("profiles/")
        async with grpc.aio.insecure_channel(suite.target("decisioning")) as channel:
            decided = (await dc_grpc.DecisioningServiceStub(channel).Decide(dc_pb.DecideRequest(
                decision_point="decisionPoints/next-order-offer", profile_id=profile_id),
                metadata=bearer(key))).decision
        exported = await cjo("profile", "export", "user_id:ada")
        document = json.loads(exported.stdout)
        assert "order_completed" in json.dumps(document["events"])
        assert [d["decisionId"] for d in document["decisioning"]["decisions"]] == [
            decided.decision_id]
        assert document["decisioning"]["decisions"][0]["actions"]
        assert [t["profileId"] for t in document["decisioning"]["sendTimes"]] == [profile_id]

        erased = await cjo("profile", "erase", "user_id:ada", "--yes")
        assert "erased" in erased.stdout
        gone = await cjo("profile", "show", "user_id:ada", check=False)
        assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr

        bad = await cjo("list", "journeys", check=False, CJO_API_KEY="cjo_wrong")
        assert bad.returncode == 1 and "UNAUTHENTICATED" in bad.stderr
        assert key not in bad.stderr + bad.stdout
        assert os.environ.get("CJO_API_KEY") != key
