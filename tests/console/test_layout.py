"""The console's graph layout and interval charts: what a person reading them relies on."""

from __future__ import annotations

import math

from cjo_console.domain.charts import IntervalRow, interval_chart
from cjo_console.domain.graph import Exit, NodeSpec, layout


def test_nodes_are_layered_by_steps_from_the_entry_and_loops_drawn_back() -> None:
    nodes = [
        NodeSpec("done", "exit", ""),
        NodeSpec("ask", "send", "email: ask", (Exit("wait"),)),
        NodeSpec("wait", "wait", "for clicked", (Exit("thanks", "event"), Exit("ask", "timeout"))),
        NodeSpec("thanks", "send", "email: thanks", (Exit("done"),)),
        NodeSpec("orphan", "send", "never reached"),
    ]
    graph = layout("ask", nodes)
    by_id = {n.node_id: n for n in graph.nodes}
    assert {k: v.layer for k, v in by_id.items()} == {
        "ask": 0, "wait": 1, "thanks": 2, "done": 3, "orphan": 4}
    # Each layer is below the one before; nothing overlaps.
    ys = [by_id[n].y for n in ("ask", "wait", "thanks", "done", "orphan")]
    assert ys == sorted(ys) and len(set(ys)) == 5
    assert all(n.x >= 0 and n.x + n.width <= graph.width for n in graph.nodes)
    assert all(n.y + n.height <= graph.height for n in graph.nodes)
    edges = {(e.source, e.target): e for e in graph.edges}
    assert set(edges) == {("ask", "wait"), ("wait", "thanks"), ("wait", "ask"), ("thanks", "done")}
    assert edges[("wait", "ask")].back and edges[("wait", "ask")].label == "timeout"
    assert not edges[("wait", "thanks")].back and edges[("wait", "thanks")].label == "event"


def test_branches_sit_side_by_side_in_one_layer() -> None:
    nodes = [NodeSpec("split", "split", "", (Exit("a", "a"), Exit("b", "b"))),
             NodeSpec("a", "send", ""), NodeSpec("b", "send", "")]
    graph = layout("split", nodes)
    by_id = {n.node_id: n for n in graph.nodes}
    assert by_id["a"].y == by_id["b"].y and by_id["a"].x + by_id["a"].width < by_id["b"].x


def test_interval_chart_places_zero_and_orders_bounds() -> None:
    chart = interval_chart([IntervalRow("b", 0.02, -0.01, 0.05),
                            IntervalRow("c", -0.03, -0.06, float("nan"))])
    b, c = chart.rows
    assert chart.x_reference is not None
    assert b.x_lower < chart.x_reference < b.x_estimate < b.x_upper
    # A bound that is not a number collapses onto the estimate instead of breaking the axis.
    assert math.isclose(c.upper, -0.03) and c.x_upper == c.x_estimate
    assert all(r.x_lower >= 0 and r.x_upper <= chart.width for r in chart.rows)
