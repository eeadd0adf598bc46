"""Journey validation, as pure functions returning every problem found.

Two levels: the *shape* of a draft (checked on every create and update, so nothing malformed is
ever stored) and *publishability* of the whole graph (checked by PublishJourney, since a draft
may be incomplete while someone is still writing it). Field paths are relative to the journey,
e.g. ``nodes[2].send.next_node_id``.
"""

from __future__ import annotations

import re

from cjo_orchestration.domain.journeys import Channel, JourneyGraph, SendAction
from cjo_platform.errors import Violations
from cjo_platform.limits import MAX_ID_LENGTH

MAX_DISPLAY_NAME_LENGTH = 200
MAX_EVENT_NAME_LENGTH = 200
MAX_NODES = 200
NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NODE_ID_RULE = "must be 1 to 64 letters, digits, '-' or '_'"
# Only email can be sent in this release; the other channels exist in the contract already.
SUPPORTED_CHANNELS = frozenset({Channel.EMAIL})


def validate_shape(display_name: str, graph: JourneyGraph) -> Violations:
    """Problems that make a draft unstorable, whatever its completeness."""
    problems = Violations()
    problems.check(len(display_name) <= MAX_DISPLAY_NAME_LENGTH, "display_name",
                   f"at most {MAX_DISPLAY_NAME_LENGTH} characters")
    if graph.trigger is not None:
        problems.check(len(graph.trigger.event_name) <= MAX_EVENT_NAME_LENGTH,
                       "event_trigger.event_name", f"at most {MAX_EVENT_NAME_LENGTH} characters")
    problems.check(len(graph.nodes) <= MAX_NODES, "nodes",
                   f"at most {MAX_NODES} nodes, got {len(graph.nodes)}")
    if graph.entry_node_id:
        problems.check(bool(NODE_ID.match(graph.entry_node_id)), "entry_node_id", NODE_ID_RULE)
    first_index: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        at = f"nodes[{index}]"
        if not NODE_ID.match(node.id):
            problems.add(f"{at}.id", NODE_ID_RULE)
        elif node.id in first_index:
            problems.add(f"{at}.id", f"duplicates nodes[{first_index[node.id]}].id {node.id!r}")
        else:
            first_index[node.id] = index
        action = node.action
        if action is None:
            problems.add(at, "must have a kind: send or exit")
        elif isinstance(action, SendAction):
            _check_send(problems, f"{at}.send", action)
    return problems


def _check_send(problems: Violations, at: str, send: SendAction) -> None:
    if not send.content_key:
        problems.add(f"{at}.content_key", "is required")
    elif len(send.content_key) > MAX_ID_LENGTH or "/" in send.content_key:
        problems.add(f"{at}.content_key", f"at most {MAX_ID_LENGTH} characters, without '/'")
    if send.channel is None:
        problems.add(f"{at}.channel", "is required")
    elif send.channel not in SUPPORTED_CHANNELS:
        problems.add(f"{at}.channel", "only CHANNEL_EMAIL can be sent for now")
    if send.next_node_id and not NODE_ID.match(send.next_node_id):
        problems.add(f"{at}.next_node_id", NODE_ID_RULE)


def validate_for_publish(display_name: str, graph: JourneyGraph) -> Violations:
    """Every reason the graph cannot run, each as its own violation: the shape problems, then a
    missing trigger, a missing or unknown entry node, dangling edges, nodes no enrollment can
    reach, and cycles (without wait nodes, a cycle would send in a tight loop)."""
    problems = validate_shape(display_name, graph)
    if graph.trigger is None:
        problems.add("event_trigger", "is required: a journey needs a trigger to enroll anyone")
    elif not graph.trigger.event_name:
        problems.add("event_trigger.event_name", "is required")
    if not graph.nodes:
        problems.add("nodes", "at least one node is required")

    index_of: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        index_of.setdefault(node.id, index)
    entry_known = graph.entry_node_id in index_of
    if not graph.entry_node_id:
        problems.add("entry_node_id", "is required")
    elif not entry_known:
        problems.add("entry_node_id", f"names no node: {graph.entry_node_id!r}")

    # Adjacency over known targets only; dangling edges are reported and otherwise ignored.
    successors: list[list[tuple[str, int]]] = []
    for index, node in enumerate(graph.nodes):
        targets = []
        for field, target in node.edges():
            if target in index_of:
                targets.append((field, index_of[target]))
            else:
                problems.add(f"nodes[{index}].{field}", f"names no node: {target!r}")
        successors.append(targets)

    if entry_known:
        reached = _reachable(successors, index_of[graph.entry_node_id])
        for index, node in enumerate(graph.nodes):
            if index not in reached and index_of.get(node.id) == index:
                problems.add(f"nodes[{index}]",
                             f"node {node.id!r} cannot be reached from the entry node")

    for index, field, path in _cycles(successors):
        names = " -> ".join(graph.nodes[i].id for i in path)
        problems.add(f"nodes[{index}].{field}", f"closes a cycle: {names}")
    return problems


def _reachable(successors: list[list[tuple[str, int]]], start: int) -> set[int]:
    seen = {start}
    stack = [start]
    while stack:
        for _, target in successors[stack.pop()]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _cycles(successors: list[list[tuple[str, int]]]) -> list[tuple[int, str, list[int]]]:
    """Each back edge of a depth-first search, once: (node index, edge field, cycle path).

    Iterative, so a long chain of nodes cannot exhaust the interpreter's stack.
    """
    WHITE, GREY, BLACK = 0, 1, 2
    color = [WHITE] * len(successors)
    found: list[tuple[int, str, list[int]]] = []
    for root in range(len(successors)):
        if color[root] != WHITE:
            continue
        path = [root]
        cursors = [0]
        color[root] = GREY
        while path:
            current = path[-1]
            edges = successors[current]
            if cursors[-1] == len(edges):
                color[current] = BLACK
                path.pop()
                cursors.pop()
                continue
            field, target = edges[cursors[-1]]
            cursors[-1] += 1
            if color[target] == GREY:
                cycle = [*path[path.index(target):], target]
                found.append((current, field, cycle))
            elif color[target] == WHITE:
                color[target] = GREY
                path.append(target)
                cursors.append(0)
    return found
