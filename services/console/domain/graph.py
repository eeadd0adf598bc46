"""A journey as a drawable graph: nodes placed in layers from the entry node, edges labelled
with the branch they stand for. Pure: takes plain node descriptions, returns coordinates."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

NODE_WIDTH = 190
NODE_HEIGHT = 86
LAYER_GAP = 64  # vertical space between layers, where the edges run
COLUMN_GAP = 36
MARGIN = 24


@dataclass(frozen=True)
class Exit:
    """One way out of a node: where it leads and what takes it there (empty for the only way)."""

    target: str
    label: str = ""


@dataclass(frozen=True)
class NodeSpec:
    """A journey node as the layout needs it: its id, its kind and a one-line summary."""

    node_id: str
    kind: str
    summary: str
    exits: tuple[Exit, ...] = ()


@dataclass(frozen=True)
class PlacedNode:
    node_id: str
    kind: str
    summary: str
    layer: int
    x: int
    y: int
    width: int = NODE_WIDTH
    height: int = NODE_HEIGHT


@dataclass(frozen=True)
class PlacedEdge:
    source: str
    target: str
    label: str
    path: str  # SVG path data
    label_x: int
    label_y: int
    back: bool  # points to an earlier or the same layer (a loop back)


@dataclass(frozen=True)
class GraphLayout:
    nodes: tuple[PlacedNode, ...]
    edges: tuple[PlacedEdge, ...]
    width: int
    height: int


def layers(entry: str, nodes: Sequence[NodeSpec]) -> dict[str, int]:
    """Each node's layer: its distance in steps from the entry node (breadth first, so loops
    back do not push nodes down forever). Nodes not reachable from the entry (a draft's loose
    ends) go in one layer below the rest, so they are still shown."""
    by_id = {n.node_id: n for n in nodes}
    layer: dict[str, int] = {}
    if entry in by_id:
        layer[entry] = 0
        queue = deque([entry])
        while queue:
            current = queue.popleft()
            for out in by_id[current].exits:
                if out.target in by_id and out.target not in layer:
                    layer[out.target] = layer[current] + 1
                    queue.append(out.target)
    loose = max(layer.values(), default=-1) + 1
    for n in nodes:
        layer.setdefault(n.node_id, loose)
    return layer


def layout(entry: str, nodes: Sequence[NodeSpec]) -> GraphLayout:
    """Place the nodes top to bottom by layer, each layer centred, in the journey's own node
    order within a layer (stable between refreshes, so nothing jumps)."""
    layer_of = layers(entry, nodes)
    rows: dict[int, list[NodeSpec]] = {}
    for n in nodes:
        rows.setdefault(layer_of[n.node_id], []).append(n)
    widest = max((len(r) for r in rows.values()), default=0)
    width = MARGIN * 2 + max(widest * NODE_WIDTH + (widest - 1) * COLUMN_GAP, NODE_WIDTH)
    placed: dict[str, PlacedNode] = {}
    for index, depth in enumerate(sorted(rows)):
        row = rows[depth]
        row_width = len(row) * NODE_WIDTH + (len(row) - 1) * COLUMN_GAP
        left = (width - row_width) // 2
        y = MARGIN + index * (NODE_HEIGHT + LAYER_GAP)
        for i, n in enumerate(row):
            placed[n.node_id] = PlacedNode(n.node_id, n.kind, n.summary, depth,
                                           left + i * (NODE_WIDTH + COLUMN_GAP), y)
    height = MARGIN * 2 + len(rows) * NODE_HEIGHT + max(len(rows) - 1, 0) * LAYER_GAP
    edges = [_edge(placed[n.node_id], placed[out.target], out.label)
             for n in nodes for out in n.exits if out.target in placed]
    # Loops back are drawn along the right edge: leave room for them.
    if any(e.back for e in edges):
        width += 2 * MARGIN
    return GraphLayout(tuple(placed.values()), tuple(edges), width, height)


def _edge(source: PlacedNode, target: PlacedNode, label: str) -> PlacedEdge:
    back = target.layer <= source.layer
    if not back:
        x1, y1 = source.x + source.width // 2, source.y + source.height
        x2, y2 = target.x + target.width // 2, target.y
        bend = (y2 - y1) // 2
        path = f"M{x1},{y1} C{x1},{y1 + bend} {x2},{y2 - bend} {x2},{y2}"
        return PlacedEdge(source.node_id, target.node_id, label, path,
                          (x1 + x2) // 2, (y1 + y2) // 2, False)
    # Out of the source's right side, round to the right, into the target's right side.
    x1, y1 = source.x + source.width, source.y + source.height // 2
    x2, y2 = target.x + target.width, target.y + target.height // 2
    reach = max(x1, x2) + 2 * MARGIN
    path = f"M{x1},{y1} C{reach},{y1} {reach},{y2} {x2},{y2}"
    return PlacedEdge(source.node_id, target.node_id, label, path, reach - MARGIN // 2,
                      (y1 + y2) // 2, True)
