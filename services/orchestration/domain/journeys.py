"""Journeys: a trigger and a graph of nodes, edited as a draft and frozen into versions.

A published version never changes, so every enrollment keeps walking the graph it entered on
while authors keep editing the draft.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from cjo_platform.errors import Aborted, FailedPrecondition


class JourneyState(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    IN_APP = "in_app"
    WEBHOOK = "webhook"


@dataclass(frozen=True)
class EventTrigger:
    event_name: str


@dataclass(frozen=True)
class SendAction:
    """Render a content item for the profile and hand it to delivery."""

    content_key: str
    channel: Channel | None
    next_node_id: str = ""


@dataclass(frozen=True)
class ExitAction:
    """End the enrollment."""


Action = SendAction | ExitAction


@dataclass(frozen=True)
class Node:
    id: str
    action: Action | None  # None only in a draft someone is still writing; never published

    def edges(self) -> Iterator[tuple[str, str]]:
        """(field path relative to the node, target node id) of every outgoing edge."""
        if isinstance(self.action, SendAction) and self.action.next_node_id:
            yield "send.next_node_id", self.action.next_node_id


@dataclass(frozen=True)
class JourneyGraph:
    """What a version freezes: the trigger and the nodes."""

    trigger: EventTrigger | None = None
    nodes: tuple[Node, ...] = ()
    entry_node_id: str = ""

    def node(self, node_id: str) -> Node | None:
        return self._by_id.get(node_id)

    @cached_property
    def _by_id(self) -> dict[str, Node]:
        # The engine looks nodes up on every step of every enrollment of a cached version.
        found: dict[str, Node] = {}
        for node in self.nodes:
            found.setdefault(node.id, node)
        return found

    @property
    def event_name(self) -> str:
        return self.trigger.event_name if self.trigger else ""

    # Stored as JSON: readable in the database, and new node kinds only add keys.
    def to_dict(self) -> dict[str, Any]:
        return {
            "trigger": {"event_name": self.trigger.event_name} if self.trigger else None,
            "nodes": [_node_to_dict(n) for n in self.nodes],
            "entry_node_id": self.entry_node_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JourneyGraph:
        trigger = data.get("trigger")
        return cls(
            trigger=EventTrigger(trigger["event_name"]) if trigger else None,
            nodes=tuple(_node_from_dict(n) for n in data.get("nodes", ())),
            entry_node_id=data.get("entry_node_id", ""),
        )


def _node_to_dict(node: Node) -> dict[str, Any]:
    action = node.action
    if isinstance(action, SendAction):
        return {"id": node.id, "send": {
            "content_key": action.content_key,
            "channel": action.channel.value if action.channel else None,
            "next_node_id": action.next_node_id}}
    if isinstance(action, ExitAction):
        return {"id": node.id, "exit": {}}
    return {"id": node.id}


def _node_from_dict(data: Mapping[str, Any]) -> Node:
    action: Action | None = None
    if (send := data.get("send")) is not None:
        channel = send.get("channel")
        action = SendAction(send.get("content_key", ""), Channel(channel) if channel else None,
                            send.get("next_node_id", ""))
    elif data.get("exit") is not None:
        action = ExitAction()
    return Node(data["id"], action)


@dataclass(frozen=True)
class Journey:
    workspace_id: str
    journey_id: str
    display_name: str
    state: JourneyState
    graph: JourneyGraph  # the draft
    published_version: int
    revision: int
    create_time: datetime
    update_time: datetime

    @property
    def etag(self) -> str:
        return f'"{self.revision}"'


@dataclass(frozen=True)
class JourneyVersion:
    workspace_id: str
    journey_id: str
    version: int
    graph: JourneyGraph
    create_time: datetime


# Fields UpdateJourney may change, by their proto names.
UPDATABLE_FIELDS = ("display_name", "event_trigger", "nodes", "entry_node_id")


@dataclass(frozen=True)
class JourneyChanges:
    """New values for an update; only the fields named in ``fields`` are applied."""

    fields: frozenset[str]
    display_name: str = ""
    trigger: EventTrigger | None = None
    nodes: tuple[Node, ...] = ()
    entry_node_id: str = ""


def ensure_editable(journey: Journey, action: str) -> None:
    """Archived journeys are frozen for good."""
    if journey.state is JourneyState.ARCHIVED:
        raise FailedPrecondition(f"journey {journey.journey_id} is archived and cannot be {action}",
                                 reason="JOURNEY_ARCHIVED")


def apply_changes(journey: Journey, changes: JourneyChanges, etag: str, now: datetime) -> Journey:
    """The journey with its draft changed. Published versions are untouched: an active journey
    keeps enrolling on its latest version until the draft is published again."""
    ensure_editable(journey, "changed")
    if etag and etag != journey.etag:
        raise Aborted(f"journey {journey.journey_id} changed since it was read (etag {etag} is "
                      f"stale, current {journey.etag}); read it again and retry")
    graph = journey.graph
    if "event_trigger" in changes.fields:
        graph = replace(graph, trigger=changes.trigger)
    if "nodes" in changes.fields:
        graph = replace(graph, nodes=changes.nodes)
    if "entry_node_id" in changes.fields:
        graph = replace(graph, entry_node_id=changes.entry_node_id)
    display_name = (changes.display_name if "display_name" in changes.fields
                    else journey.display_name)
    return replace(journey, display_name=display_name, graph=graph,
                   revision=journey.revision + 1, update_time=now)


def publish(journey: Journey, now: datetime) -> tuple[Journey, JourneyVersion]:
    """Freeze the draft as the next version. The caller validated the graph."""
    ensure_editable(journey, "published")
    number = journey.published_version + 1
    published = replace(journey, state=JourneyState.ACTIVE, published_version=number,
                        revision=journey.revision + 1, update_time=now)
    return published, JourneyVersion(journey.workspace_id, journey.journey_id, number,
                                     journey.graph, now)


def archive(journey: Journey, now: datetime) -> Journey:
    """Archiving twice is harmless: the second call returns the journey unchanged."""
    if journey.state is JourneyState.ARCHIVED:
        return journey
    return replace(journey, state=JourneyState.ARCHIVED, revision=journey.revision + 1,
                   update_time=now)
