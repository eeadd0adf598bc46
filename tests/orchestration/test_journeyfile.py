"""Journeys as files: the YAML/JSON form maps one to one onto the proto, is validated offline
with the publish rules, and `apply` creates and publishes the journey it describes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from orchestration_support import create_content, running

from cjo.orchestration.v1 import journey_pb2
from cjo_orchestration import journeyfile
from support import SERVICE_TOKEN, Backend

EXAMPLE = Path(__file__).parents[2] / "examples" / "journeys" / "cart_abandonment.yaml"


def test_the_example_file_is_a_valid_journey_and_round_trips() -> None:
    journey = journeyfile.load(EXAMPLE)
    assert journeyfile.problems(journey) == []
    assert journey.re_entry == journey_pb2.RE_ENTRY_POLICY_AFTER_COOLDOWN
    assert journey.nodes[2].wait.local_time.weekdays == [1, 2, 3, 4, 5]
    assert journey.goal.window.seconds == 3 * 24 * 3600
    assert journeyfile.parse(journeyfile.dump(journey)) == journey
    assert journeyfile.parse(journeyfile.dump(journey, as_json=True), suffix=".json") == journey


def test_a_typo_is_an_error_not_a_silently_dropped_field() -> None:
    with pytest.raises(journeyfile.JourneyFileError, match="wiat"):
        journeyfile.parse("display_name: x\nnodes:\n  - id: a\n    wiat: {}\n")
    with pytest.raises(journeyfile.JourneyFileError, match="mapping"):
        journeyfile.parse("- just a list\n")


def test_validate_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"event_trigger": {"event_name": "x", "filter": "event.a +"},'
                      ' "entry_node_id": "a", "nodes": [{"id": "a", "branch": {"conditions":'
                      ' [{"condition": "profile.vip", "next_node_id": "gone"}]}}]}')
    assert journeyfile.main(["validate", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "event_trigger.filter: line 1, column" in err
    assert "nodes[0].branch.conditions[0].next_node_id: names no node: 'gone'" in err


@asynccontextmanager
async def serving_the_example(backend: Backend,
                              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """A cluster with the example's content, which journeyfile's calls reach as workspace ws-a."""
    async with running(backend) as cluster:
        for key in ("cart", "cart_nudge"):
            await create_content(cluster, "ws-a", key, "Hi", "<p>Hi</p>")
        monkeypatch.setenv("CJO_ORCHESTRATION_TARGET", cluster.targets["orchestration"])
        monkeypatch.setattr(journeyfile, "_metadata", lambda: (
            ("authorization", f"Bearer {SERVICE_TOKEN}"), ("x-cjo-workspace", "ws-a")))
        yield


async def test_apply_creates_and_publishes_the_file_once(
        sqlite_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving_the_example(sqlite_backend, monkeypatch):
        journey = journeyfile.load(EXAMPLE)
        first = await journeyfile._apply(journey, publish=True)
        again = await journeyfile._apply(journey, publish=True)
        assert first.state == journey_pb2.JOURNEY_STATE_ACTIVE
        assert (again.journey_id, again.published_version) == (first.journey_id, 1)
        exported = await journeyfile._export(first.name)
        # What the server stored is what the file says (plus the id `apply` updates by).
        assert exported.journey_id == first.journey_id
        exported.ClearField("journey_id")
        assert journeyfile.to_dict(exported) == journeyfile.to_dict(journey)


async def test_apply_updates_by_journey_id_and_a_revert_applies_again(
        backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file naming its journey_id updates that journey (every update of an event-triggered
    # journey was refused: the mask named scheduled_trigger too), and applying an earlier file
    # again, as a git revert does, is a new change (it got the first apply's answer).
    async with serving_the_example(backend, monkeypatch):
        a = journeyfile.load(EXAMPLE)
        first = await journeyfile._apply(a, publish=True)
        a.journey_id = first.journey_id  # the file names its journey, as after `export`
        again = await journeyfile._apply(a, publish=True)
        assert again.published_version == 1  # the same content: nothing to change
        b = journey_pb2.Journey()
        b.CopyFrom(a)
        b.display_name = "Cart abandonment, edited"
        after_b = await journeyfile._apply(b, publish=True)
        assert (after_b.display_name, after_b.published_version) == (b.display_name, 2)
        reverted = await journeyfile._apply(a, publish=True)
        assert (reverted.display_name, reverted.published_version) == (a.display_name, 3)
        live = await journeyfile._export(first.name)
        assert (live.display_name, live.published_version) == (a.display_name, 3)
        # Applying it once more changes nothing; reverting the revert applies B again.
        assert (await journeyfile._apply(a, publish=True)).published_version == 3
        await journeyfile._apply(b, publish=True)
        live = await journeyfile._export(first.name)
        assert (live.display_name, live.published_version) == (b.display_name, 4)
