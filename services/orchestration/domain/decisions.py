"""What a journey is known by in decisioning: the decision point of an optimising split and its
actions (one per arm), named so that a re-publish finds and updates the same ones."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from cjo_orchestration.domain.journeys import JourneyGraph, SplitAction

MAX_POINT_KEY = 128  # decisioning's DecisionPoint.key
ACTION_KEY_HASH = 12  # hex characters of the journey/node digest in an arm's action key


def split_point_key(journey_id: str, node_id: str, split: SplitAction) -> str:
    """The decision point of an optimising split: ``journey.{journey_id}.{node_id}.{arms}``,
    where ``arms`` is a digest of the split's arms (names and which is the control).

    A re-publish that keeps the arms keeps the point (and what its model learned); one that
    renames, adds or removes an arm gets a point of its own, so enrollments still walking an
    older version keep deciding among that version's arms. Decisioning keys are lower-case
    ``a-z0-9_-.``, while journey and node ids are case-sensitive: an id with an upper-case
    letter (or a key longer than 128 characters) is kept apart by a digest of the exact ids, so
    nodes ``Offer`` and ``offer`` never share a point."""
    arms = "\x00".join(sorted(f"{arm.name}\x01{int(arm.control)}" for arm in split.arms))
    digest = hashlib.sha256(arms.encode()).hexdigest()[:8]
    key = f"journey.{journey_id}.{node_id}.{digest}"
    if key == key.lower() and len(key) <= MAX_POINT_KEY:
        return key
    exact = hashlib.sha256(f"{journey_id}\x00{node_id}\x00{arms}".encode()).hexdigest()[:16]
    readable = f"journey.{journey_id}.{node_id}".lower()[:MAX_POINT_KEY - len(exact) - 1]
    return f"{readable}.{exact}"


def arm_action_key(journey_id: str, node_id: str, arm: str) -> str:
    """A readable, collision-free action key of at most 64 characters (decisioning's rule):
    ``j-<12 hex of the journey and node>-<arm>``. Arm names are 1 to 64 letters, digits, '-'
    and '_' (case-sensitive, while keys are lower-case): an arm that does not fit as it is gets
    a digest of its own name instead."""
    node = hashlib.sha256(f"{journey_id}\x00{node_id}".encode()).hexdigest()[:ACTION_KEY_HASH]
    prefix = f"j-{node}-"
    if arm == arm.lower() and len(prefix) + len(arm) <= 64:
        return prefix + arm
    return prefix + "h" + hashlib.sha256(arm.encode()).hexdigest()[:64 - len(prefix) - 1]


def arm_of_action(split: SplitAction, journey_id: str, node_id: str, action: str) -> str | None:
    """The name of the arm whose action decisioning chose; None for an action of no arm."""
    for arm in split.arms:
        if arm_action_key(journey_id, node_id, arm.name) == action:
            return arm.name
    return None


@dataclass(frozen=True)
class SplitPoint:
    """What publishing an optimising split upserts in decisioning: one action per arm (no
    content: the journey acts on the arm itself) and the decision point over them, rewarded
    by the journey's goal."""

    key: str
    display_name: str
    actions: tuple[tuple[str, str], ...]  # (action key, display name), one per arm
    reward_event: str
    reward_filter: str
    reward_window: timedelta
    control_action: str = ""
    min_control_share: float = 0.0


def split_points(journey_id: str, display_name: str, graph: JourneyGraph) -> list[SplitPoint]:
    """The decision points of the graph's optimising splits (the graph was validated: each
    has the journey's goal as its reward)."""
    points = []
    for node in graph.nodes:
        split = node.action
        if not isinstance(split, SplitAction) or not split.optimize or graph.goal is None:
            continue
        name = f"{display_name or journey_id} / {node.id}"[:150]
        control = split.control
        points.append(SplitPoint(
            key=split_point_key(journey_id, node.id, split),
            display_name=f"Journey {name}"[:200],
            actions=tuple((arm_action_key(journey_id, node.id, arm.name),
                           f"{name} / arm {arm.name}"[:200]) for arm in split.arms),
            reward_event=graph.goal.event_name, reward_filter=graph.goal.filter,
            reward_window=graph.goal.window,
            control_action=(arm_action_key(journey_id, node.id, control.name)
                            if control else ""),
            min_control_share=split.control_share))
    return points
