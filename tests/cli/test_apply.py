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


CONTENT = """kind: Content
spec:
  key: promo
  display_name: Promo
  tags: [spring]
  email: {subject: Spring sale, html: "<p>Sale</p>"}
"""
JOURNEY = """kind: Journey
spec:
  display_name: Promo journey
  event_trigger: {event_name: signed_up, filter: "event.plan == 'pro'"}
  goal: {event_name: purchased, window: 86400s}
  entry_node_id: send
  nodes:
    - id: send
      send: {content_key: promo, channel: CHANNEL_EMAIL, next_node_id: done}
    - id: done
      exit: {}
"""
QUIET = '    quiet_hours: {start: "21:00", end: "08:00", default_time_zone: Europe/Paris}\n'
SETTINGS = """kind: Settings
spec:
  delivery_policy:
""" + QUIET + """    frequency_caps:
      - {channel: CHANNEL_EMAIL, max_messages: 3, window_seconds: 86400}
"""


async def test_apply_clears_what_the_file_no_longer_says_and_follows_renames(
        sqlite_backend: Backend, tmp_path: Path) -> None:
    """A field deleted from a manifest (top-level, or inside one) is cleared on the server, the
    dry run shows it removed, and a second apply changes nothing; a journey or provider renamed
    in a file that carries its id (as `cjo get` writes it) is updated, not created again."""
    async with running_suite(sqlite_backend, tmp_path) as suite:
        cjo = cjo_for(suite, await new_workspace(suite, "acme"), tmp_path / "config")
        files = tmp_path / "workspace"
        files.mkdir()
        (files / "promo.yaml").write_text(CONTENT)
        (files / "journey.yaml").write_text(JOURNEY)
        (files / "settings.yaml").write_text(SETTINGS)
        first = await cjo("apply", "-f", str(files))
        assert "Journey/Promo journey created" in first.stdout, first.stdout
        assert "add `journey_id: " in first.stdout, first.stdout  # the id to keep

        (files / "promo.yaml").write_text(CONTENT.replace("  tags: [spring]\n", ""))
        (files / "journey.yaml").write_text(
            JOURNEY.replace("  goal: {event_name: purchased, window: 86400s}\n", "")
            .replace(', filter: "event.plan == \'pro\'"', ""))
        (files / "settings.yaml").write_text(
            SETTINGS.replace(QUIET, ""))
        dry = await cjo("apply", "-f", str(files), "--dry-run")
        for line in ("Content/promo would be updated", "-tags:", "- spring",
                     "Journey/Promo journey would be updated", "-goal:",
                     "-  filter: event.plan == 'pro'", "Settings/delivery_policy would be updated",
                     "-quiet_hours:"):
            assert line in dry.stdout, dry.stdout
        assert "tags" in (await cjo("get", "content", "promo")).stdout  # nothing changed yet

        await cjo("apply", "-f", str(files))
        promo = (await cjo("get", "content", "promo")).stdout
        assert "tags" not in promo and "Spring sale" in promo, promo
        journey = (await cjo("get", "journey", "Promo journey")).stdout
        assert "goal" not in journey and "filter" not in journey, journey
        assert "event_name: signed_up" in journey
        settings = (await cjo("get", "settings")).stdout
        assert "quiet_hours" not in settings and "max_messages: 3" in settings, settings
        again = await cjo("apply", "-f", str(files))
        assert "no changes" in again.stdout, again.stdout

        # Renames: the files `cjo get` writes carry the id the service gave.
        await cjo("apply", "-f", "examples/providers/")
        for kind, name, new in (("journey", "Promo journey", "Spring journey"),
                                ("provider", "Development mailbox", "Relay")):
            got = (await cjo("get", kind, name)).stdout
            assert f"{kind}_id: " in got, got
            renamed = files / f"{kind}-renamed.yaml"
            renamed.write_text(got.replace(f"display_name: {name}", f"display_name: {new}"))
            applied = await cjo("apply", "-f", str(renamed))
            assert f"{kind.capitalize()}/{new} updated" in applied.stdout, applied.stdout
            listed = (await cjo("list", f"{kind}s")).stdout
            assert new in listed and name not in listed, listed
            assert "no changes" in (await cjo("apply", "-f", str(renamed))).stdout
