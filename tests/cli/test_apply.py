"""`cjo apply -f examples/` against the six services as processes: everything is created, a
second apply changes nothing and says so, and --dry-run shows a change as a diff without
making it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo_cli.resources import KIND_TABLE
from cjo_client import Client, Endpoints
from cli_support import REPO, cjo_for, new_workspace
from suite import running_suite
from support import Backend

pytestmark = pytest.mark.e2e


async def test_apply_examples_twice_then_dry_run_a_change(sqlite_backend: Backend,
                                                          tmp_path: Path) -> None:
    async with running_suite(sqlite_backend, tmp_path) as suite:
        key = await new_workspace(suite, "acme")
        cjo = cjo_for(suite, key, tmp_path / "config")

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

        # Deleted, then the first manifest applied again: the service would answer the first
        # create's request id with its first answer (an object that is gone); apply makes it.
        async with Client(Endpoints.from_env(cjo.env), key) as client:
            await client.identity.DeleteSegment(identity_pb.DeleteSegmentRequest(
                name="segments/big-spenders"), metadata=client.metadata)
        again = await cjo("apply", "-f", "examples/segments/")
        assert "Segment/big-spenders created" in again.stdout, again.stdout
        assert "> 500.0" in (await cjo("get", "segment", "big-spenders")).stdout


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


async def test_apply_keeps_a_pause_refuses_an_archive_or_a_shared_name_and_sends_secrets(
        sqlite_backend: Backend, tmp_path: Path) -> None:
    """An operator's pause outlives the next deploy (apply never publishes a paused journey,
    which would resume it); a manifest naming an archived journey is an error, not a new
    journey sending again (unless --recreate); two live journeys of one name are refused; a
    provider's secrets, never read back, are sent on every apply so a rotation takes effect."""
    async with running_suite(sqlite_backend, tmp_path) as suite:
        key = await new_workspace(suite, "acme")
        cjo = cjo_for(suite, key, tmp_path / "config")
        await cjo("apply", "-f", "examples/")
        async with Client(Endpoints.from_env(cjo.env), key) as client:
            journeys = await KIND_TABLE["Journey"].list(client)
            thank = next(j for j in journeys if j.display_name == "Thank buyers")
            await client.orchestration.PauseJourney(orch_pb.PauseJourneyRequest(
                name=thank.name, request_id="pause-1"), metadata=client.metadata)

            again = await cjo("apply", "-f", "examples/")
            assert "Journey/Thank buyers unchanged" in again.stdout, again.stdout
            assert "paused; not published" in again.stdout, again.stdout
            got = (await client.orchestration.GetJourney(orch_pb.GetJourneyRequest(
                name=thank.name), metadata=client.metadata)).journey
            assert got.state == journey_pb2.JOURNEY_STATE_PAUSED
            assert got.published_version == thank.published_version

            await client.orchestration.ArchiveJourney(orch_pb.ArchiveJourneyRequest(
                name=thank.name, request_id="archive-1"), metadata=client.metadata)
            refused = await cjo("apply", "-f", "examples/journeys/", check=False)
            assert refused.returncode == 1, refused.stdout
            assert "Thank buyers is archived" in refused.stderr, refused.stderr
            named = [j for j in await KIND_TABLE["Journey"].list(client)
                     if j.display_name == "Thank buyers"]
            assert len(named) == 1  # no second journey
            recreated = await cjo("apply", "-f", "examples/journeys/", "--recreate")
            assert "Journey/Thank buyers created" in recreated.stdout, recreated.stdout
            # A new journey exists (not the archived one's create replayed), live and published.
            named = [j for j in await KIND_TABLE["Journey"].list(client)
                     if j.display_name == "Thank buyers"]
            fresh = [j for j in named if j.name != thank.name]
            assert len(fresh) == 1, named
            assert fresh[0].state == journey_pb2.JOURNEY_STATE_ACTIVE, fresh[0]
            assert fresh[0].published_version, fresh[0]

            # A second live journey of the same name: which one is meant cannot be told.
            twin = journey_pb2.Journey()
            twin.CopyFrom(next(j for j in await KIND_TABLE["Journey"].list(client)
                               if j.display_name == "Cart abandonment"))
            twin.ClearField("name")
            await client.orchestration.CreateJourney(orch_pb.CreateJourneyRequest(
                journey=twin, request_id="twin-1"), metadata=client.metadata)
            ambiguous = await cjo("apply", "-f", "examples/journeys/", check=False)
            assert ambiguous.returncode == 1
            assert "2 journeys are named 'Cart abandonment'" in ambiguous.stderr, \
                ambiguous.stderr

            # Secrets: a changed password is sent (the provider changes), and the diff says
            # they are not compared.
            provider = tmp_path / "provider.yaml"
            text = (REPO / "examples/providers/dev_mailbox.yaml").read_text()
            provider.write_text(text + "  secrets: {username: u, password: a}\n")
            await cjo("apply", "-f", str(provider))
            before = await KIND_TABLE["Provider"].get(client, "Development mailbox")
            assert before is not None and sorted(before.secret_keys) == ["password", "username"]
            provider.write_text(text + "  secrets: {username: u, password: b}\n")
            dry = await cjo("apply", "-f", str(provider), "--dry-run")
            assert "secrets: (not compared; sent again)" in dry.stdout, dry.stdout
            rotated = await cjo("apply", "-f", str(provider))
            assert "Provider/Development mailbox updated" in rotated.stdout, rotated.stdout
            after = await KIND_TABLE["Provider"].get(client, "Development mailbox")
            assert after is not None and after.etag != before.etag
