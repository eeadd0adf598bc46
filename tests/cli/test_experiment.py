"""`cjo experiment ID` against the services as processes: a journey with a split and a control
arm is applied, people enter it and some buy; the table shows each arm with the exposures and
conversions analytics counted and the lift's interval."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest

from cjo.analytics.v1 import reports_pb2
from cjo_client import Client, Endpoints
from cli_support import cjo_for, new_workspace
from suite import running_suite
from support import Backend, eventually

pytestmark = pytest.mark.e2e

PEOPLE = 24
JOURNEY = """kind: Journey
publish: true
spec:
  display_name: Welcome split
  event_trigger: {event_name: signed_up}
  goal: {event_name: purchased, window: 86400s}
  entry_node_id: split
  nodes:
    - id: split
      split:
        arms:
          - {name: treated, percent: 50, next_node_id: done}
          - {name: holdout, percent: 50, control: true}
    - id: done
      exit: {}
"""


def pct(value: float) -> str:
    return f"{value:+.2%}"


async def test_experiment_table_shows_arms_counts_and_intervals(sqlite_backend: Backend,
                                                                tmp_path: Path) -> None:
    async with running_suite(sqlite_backend, tmp_path) as suite:
        key = await new_workspace(suite, "acme")
        cjo = cjo_for(suite, key, tmp_path / "config")
        manifest = tmp_path / "split.yaml"
        manifest.write_text(JOURNEY)
        await cjo("apply", "-f", str(manifest))
        described = json.loads((await cjo("describe", "journey", "Welcome split", "-o",
                                          "json")).stdout)
        experiment_id = f"{described['journey_id']}:split"

        events = tmp_path / "events.ndjson"
        lines = [{"name": "signed_up", "user_id": f"p{i}"} for i in range(PEOPLE)]
        events.write_text("".join(json.dumps(e) + "\n" for e in lines))
        await cjo("import", "events", str(events))

        async with Client(Endpoints({"analytics": suite.target("analytics")}), key) as client:
            async def exposed() -> bool:
                try:
                    reply = await client.analytics.GetExperimentResults(
                        reports_pb2.GetExperimentResultsRequest(experiment_id=experiment_id),
                        metadata=client.metadata)
                except grpc.aio.AioRpcError as refused:
                    # Until analytics holds the first exposure, the experiment is unknown to it.
                    if "no exposure was recorded" in (refused.details() or ""):
                        return False
                    raise
                return sum(a.exposures for a in reply.arms) == PEOPLE
            await eventually(exposed, timeout=60, interval=0.5)
            # Every third person buys, after entering: the journey's goal converts them.
            buys = tmp_path / "buys.ndjson"
            buys.write_text("".join(json.dumps({"name": "purchased", "user_id": f"p{i}"}) + "\n"
                                    for i in range(0, PEOPLE, 3)))
            await cjo("import", "events", str(buys))

            async def converted() -> reports_pb2.GetExperimentResultsResponse | None:
                reply = await client.analytics.GetExperimentResults(
                    reports_pb2.GetExperimentResultsRequest(experiment_id=experiment_id),
                    metadata=client.metadata)
                done = sum(a.conversions for a in reply.arms) == PEOPLE // 3
                return reply if done else None
            truth = await eventually(converted, timeout=60, interval=0.5)
        assert isinstance(truth, reports_pb2.GetExperimentResultsResponse)

        shown = (await cjo("experiment", experiment_id)).stdout
        assert f"experiment {experiment_id} (control holdout)" in shown, shown
        rows = {m.group(1): [c.strip() for c in m.group(2).split("│")]
                for m in re.finditer(r"│\s*(treated|holdout(?: \(control\))?)\s*│(.*)│", shown)}
        assert set(rows) == {"treated", "holdout (control)"}, shown
        arms = {a.arm: a for a in truth.arms}
        assert arms["treated"].exposures + arms["holdout"].exposures == PEOPLE
        for label, arm in (("treated", arms["treated"]), ("holdout (control)",
                                                          arms["holdout"])):
            exposures, conversions, rate, lift, interval, p = rows[label]
            assert (int(exposures), int(conversions)) == (arm.exposures, arm.conversions)
            assert rate == f"{arm.conversion_rate:.2%}"
            if arm.control:
                assert (lift, interval, p) == ("", "", "")
                continue
            assert lift == pct(arm.absolute_lift)
            lower, upper = arm.absolute_lift_ci.lower, arm.absolute_lift_ci.upper
            assert lower < arm.absolute_lift < upper  # an interval, not a point
            assert interval == f"[{pct(lower)}, {pct(upper)}]"
            assert p == f"{arm.p_value:.3f}"

        missing = await cjo("experiment", "no-such:split", check=False)
        assert missing.returncode == 1, missing.stderr
        assert "reason: UNKNOWN_EXPERIMENT" in missing.stderr, missing.stderr

