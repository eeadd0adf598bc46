"""Journey validation (pure): the shape of drafts and the publishability of graphs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cjo_orchestration.domain.graph import validate_for_publish, validate_shape
from cjo_orchestration.domain.journeys import (
    Channel,
    EventTrigger,
    ExitAction,
    Journey,
    JourneyChanges,
    JourneyGraph,
    JourneyState,
    Node,
    SendAction,
    apply_changes,
    archive,
    publish,
)
from cjo_platform.errors import Aborted, FailedPrecondition

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def send(node_id: str, next_id: str = "", key: str = "welcome",
         channel: Channel | None = Channel.EMAIL) -> Node:
    return Node(node_id, SendAction(key, channel, next_id))


def exit_node(node_id: str) -> Node:
    return Node(node_id, ExitAction())


def graph(*nodes: Node, entry: str = "a", event: str | None = "cart_updated") -> JourneyGraph:
    return JourneyGraph(EventTrigger(event) if event is not None else None, nodes, entry)


def problems(found: object) -> dict[str, str]:
    return {v.field: v.description for v in found.items}  # type: ignore[attr-defined]


def test_a_send_then_exit_journey_is_publishable() -> None:
    assert not validate_for_publish("Cart", graph(send("a", "b"), exit_node("b")))


def test_a_send_without_next_node_ends_the_journey_and_is_publishable() -> None:
    assert not validate_for_publish("", graph(send("a")))


def test_shape_names_each_bad_node_field() -> None:
    found = problems(validate_shape("x" * 201, graph(
        send("ok"), send("ok"), Node("bad id!", None), send("c", key="", channel=None),
        send("d", channel=Channel.SMS), send("e", next_id="no/slash"),
    )))
    assert found == {
        "display_name": "at most 200 characters",
        "nodes[1].id": "duplicates nodes[0].id 'ok'",
        "nodes[2].id": "must be 1 to 64 letters, digits, '-' or '_'",
        "nodes[2]": "must have a kind: send, wait, branch, split, update_profile, decide or exit",
        "nodes[3].send.content_key": "is required",
        "nodes[3].send.channel": "is required (or channel_preference)",
        "nodes[5].send.next_node_id": "must be 1 to 64 letters, digits, '-' or '_'",
    }


def test_a_draft_may_be_incomplete() -> None:
    assert not validate_shape("", JourneyGraph())
    assert not validate_shape("Draft", graph(send("a", "missing"), entry="", event=None))


def test_publish_reports_every_problem_on_its_own() -> None:
    found = problems(validate_for_publish("", graph(
        send("a", "ghost"), send("b", "c"), send("c", "b"), exit_node("d"),
        entry="a", event="")))
    assert found == {
        "event_trigger.event_name": "is required",
        "nodes[0].send.next_node_id": "names no node: 'ghost'",
        "nodes[1]": "node 'b' cannot be reached from the entry node",
        "nodes[2]": "node 'c' cannot be reached from the entry node",
        "nodes[3]": "node 'd' cannot be reached from the entry node",
        "nodes[2].send.next_node_id": "closes a cycle without a wait: b -> c -> b",
    }


def test_publish_needs_a_trigger_nodes_and_an_entry() -> None:
    assert problems(validate_for_publish("", JourneyGraph())) == {
        "event_trigger": "is required: a journey needs a trigger to enroll anyone",
        "nodes": "at least one node is required",
        "entry_node_id": "is required",
    }
    unknown = problems(validate_for_publish("", graph(exit_node("a"), entry="z")))
    # An unknown entry is the one problem: unreachability would only repeat it for every node.
    assert unknown == {"entry_node_id": "names no node: 'z'"}


def test_a_self_loop_is_a_cycle() -> None:
    assert problems(validate_for_publish("", graph(send("a", "a")))) == {
        "nodes[0].send.next_node_id": "closes a cycle without a wait: a -> a"}


def test_a_long_chain_is_validated_without_recursion() -> None:
    nodes = [send(f"n{i}", f"n{i + 1}") for i in range(199)] + [exit_node("n199")]
    assert not validate_for_publish("", graph(*nodes, entry="n0"))


def test_graph_round_trips_through_its_stored_form() -> None:
    original = graph(send("a", "b"), exit_node("b"), Node("c", None))
    assert JourneyGraph.from_dict(original.to_dict()) == original
    assert JourneyGraph.from_dict(JourneyGraph().to_dict()) == JourneyGraph()


def journey(state: JourneyState = JourneyState.DRAFT) -> Journey:
    return Journey("ws", "j1", "Cart", state, graph(send("a")), 0, 1, NOW, NOW)


def test_editing_changes_only_the_named_fields_and_the_etag() -> None:
    before = journey()
    after = apply_changes(before, JourneyChanges(frozenset({"display_name"}),
                                                 display_name="Renamed"), "", NOW)
    assert after.display_name == "Renamed"
    assert after.graph == before.graph
    assert after.etag != before.etag


def test_a_stale_etag_is_aborted_and_an_archived_journey_cannot_change() -> None:
    with pytest.raises(Aborted):
        apply_changes(journey(), JourneyChanges(frozenset({"nodes"})), '"0"', NOW)
    with pytest.raises(FailedPrecondition):
        apply_changes(journey(JourneyState.ARCHIVED), JourneyChanges(frozenset({"nodes"})), "",
                      NOW)
    with pytest.raises(FailedPrecondition):
        publish(journey(JourneyState.ARCHIVED), NOW)


def test_publishing_freezes_the_next_version_and_archiving_is_idempotent() -> None:
    active, version = publish(journey(), NOW)
    assert (active.state, active.published_version, version.version) == (
        JourneyState.ACTIVE, 1, 1)
    again, second = publish(active, NOW)
    assert (again.published_version, second.version) == (2, 2)
    archived = archive(again, NOW)
    assert archived.state is JourneyState.ARCHIVED
    assert archive(archived, NOW) is archived
