"""`cjo apply -f examples/` against the six services as processes: everything is created, a
second apply changes nothing and says so, and --dry-run shows a change as a diff without
making it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import REPO, cjo_for, new_workspace
from suite import running_suite
from support import Backend

pytestmark = pytest.mark.e2e


async def test_apply_examples_twice_then_dry_run_a_change(sqlite_backend: Backend,
                                                          tmp_path: Path) -> None:
    async with running_suite(sqlite_backend, tmp_path) as suite:
        cjo = cjo_for(suite, await new_workspace(suite, "acme"), tmp_path / "config")

        first = await cjo("apply", "-f", "examples/")
        for line in ("Snippet/footer created", "Content/thank-you-email created",
                     "Segment/big-spenders created", "Provider/Development mailbox created",
                     "Action/ten-off created", "DecisionPoint/next-order-offer created",
                     "Journey/Thank buyers created", "Journey/Cart abandonment created",
                     "Settings/identity updated", "Settings/delivery_policy updated"):
            assert line in first.stdout, first.stdout

        second = await cjo("apply", "-f", "examples/")
        assert "no changes" in second.stdout, second.stdout
        assert "created" not in second.stdout and "updated" not in second.stdout

        listed = await cjo("list", "journeys")
        assert "Thank buyers" in listed.stdout and "JOURNEY_STATE_ACTIVE" in listed.stdout
        got = await cjo("get", "content", "thank-you-email")
        assert "key: thank-you-email" in got.stdout and "etag" not in got.stdout

        changed = tmp_path / "changed.yaml"
        changed.write_text((REPO / "examples/segments/big_spenders.yaml").read_text()
                           .replace("> 500.0", "> 900.0"))
        dry = await cjo("apply", "-f", str(changed), "--dry-run")
        assert "Segment/big-spenders would be updated" in dry.stdout, dry.stdout
        assert "-condition: has(traits.lifetime_value) && traits.lifetime_value > 500.0" \
            in dry.stdout, dry.stdout
        assert "+condition: has(traits.lifetime_value) && traits.lifetime_value > 900.0" \
            in dry.stdout
        described = await cjo("describe", "segment", "big-spenders", "-o", "json")
        assert "> 500.0" in described.stdout  # the dry run changed nothing

        applied = await cjo("apply", "-f", str(changed))
        assert "Segment/big-spenders updated" in applied.stdout
        assert "> 900.0" in (await cjo("get", "segment", "big-spenders")).stdout

        # A refused manifest: the server's field violation, one readable line.
        broken = tmp_path / "broken.yaml"
        broken.write_text("kind: Segment\nspec:\n  segment_id: broken\n"
                          "  display_name: Broken\n  condition: 'traits.age >'\n")
        refused = await cjo("apply", "-f", str(broken), check=False)
        assert refused.returncode == 1
        assert refused.stderr.startswith("INVALID_ARGUMENT"), refused.stderr
        assert "  segment.condition: " in refused.stderr, refused.stderr
