"""Journey validation, as pure functions returning every problem found.

Two levels: the *shape* of a draft (checked on every create and update, so nothing malformed is
ever stored) and *publishability* of the whole graph (checked by PublishJourney, since a draft
may be incomplete while someone is still writing it). Field paths are relative to the journey,
e.g. ``nodes[2].send.next_node_id``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cjo_orchestration.domain.conditions import (
    CONDITION_VARIABLES,
    JOURNEY_FIELDS,
    TRIGGER_JOURNEY_FIELDS,
    unknown_journey_fields,
)
from cjo_orchestration.domain.journeys import (
    BranchAction,
    DecideAction,
    EventTrigger,
    ExitCriterion,
    Goal,
    JourneyGraph,
    ReEntry,
    SendAction,
    SplitAction,
    TriggerKind,
    UpdateProfileAction,
    WaitAction,
)
from cjo_orchestration.domain.schedule import check_publishable, check_schedule
from cjo_platform.cel import compile_expression, load_expression
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.ids import SEGMENT_ID_RULE, is_segment_id
from cjo_platform.limits import MAX_ID_LENGTH, check_topic

MAX_DISPLAY_NAME_LENGTH = 200
MAX_EVENT_NAME_LENGTH = 200
MAX_NODES = 200
NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NODE_ID_RULE = "must be 1 to 64 letters, digits, '-' or '_'"
MAX_WAIT = timedelta(days=366)
MAX_TRAITS = 100
MAX_BEST_TIME_DELAY = timedelta(days=7)
MAX_MIN_CONTROL_PERCENT = 50
# decisioning's DecisionPoint.key; keys starting with "journey." belong to optimising splits.
DECISION_POINT_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
DECISION_POINT_KEY_RULE = ("must be 1 to 128 characters of a-z, 0-9, '_', '-' and '.', "
                           "starting with a letter or digit")
# decisioning's Reward.window: from 1 minute to 366 days.
MIN_REWARD_WINDOW = timedelta(minutes=1)
# decisioning's reward filter sees the event and the profile, not the journey.
REWARD_FILTER_VARIABLES = frozenset({"event", "profile"})


def check_expression(problems: Violations, at: str, source: str,
                     journey_fields: Collection[str] = JOURNEY_FIELDS) -> None:
    """A CEL problem as a violation with its position, e.g. 'line 1, column 7: ...'. Every
    condition may read ``event``, ``profile`` and ``journey`` (domain/conditions.py), and of
    ``journey`` only ``journey_fields``."""
    try:
        compile_expression(source, at, CONDITION_VARIABLES)
    except InvalidArgument as exc:
        for violation in exc.violations:
            problems.add(violation.field, violation.description)
        return
    unknown = unknown_journey_fields(source, journey_fields)
    if unknown:
        problems.add(at, f"unknown field journey.{', journey.'.join(unknown)}; available: "
                         f"{', '.join('journey.' + f for f in journey_fields)}")


def time_zone_known(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a directory: OSError
        return False
    return True


def _check_duration(problems: Violations, at: str, value: timedelta | None) -> None:
    if value is None or value <= timedelta(0):
        problems.add(at, "is required and must be positive")
    elif value > MAX_WAIT:
        problems.add(at, "at most 366 days")


def validate_shape(display_name: str, graph: JourneyGraph) -> Violations:
    """Problems that make a draft unstorable, whatever its completeness."""
    problems = Violations()
    problems.check(len(display_name) <= MAX_DISPLAY_NAME_LENGTH, "display_name",
                   f"at most {MAX_DISPLAY_NAME_LENGTH} characters")
    if graph.trigger is not None:
        _check_trigger(problems, graph.trigger)
    if graph.re_entry is ReEntry.AFTER_COOLDOWN:
        _check_duration(problems, "re_entry_cooldown", graph.re_entry_cooldown)
    if graph.goal is not None:
        _check_goal(problems, graph.goal)
    for index, criterion in enumerate(graph.exit_criteria):
        _check_criterion(problems, f"exit_criteria[{index}]", criterion)
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
            problems.add(at, "must have a kind: send, wait, branch, split, update_profile, "
                             "decide or exit")
        elif isinstance(action, SendAction):
            _check_send(problems, f"{at}.send", action)
        elif isinstance(action, WaitAction):
            _check_wait(problems, f"{at}.wait", action)
        elif isinstance(action, BranchAction):
            _check_branch(problems, f"{at}.branch", action)
        elif isinstance(action, SplitAction):
            _check_split(problems, f"{at}.split", action)
        elif isinstance(action, UpdateProfileAction):
            problems.check(0 < len(action.traits) <= MAX_TRAITS, f"{at}.update_profile.traits",
                           f"1 to {MAX_TRAITS} traits")
        elif isinstance(action, DecideAction):
            _check_decide(problems, f"{at}.decide", action)
        for field, target in node.edges():
            problems.check(bool(NODE_ID.match(target)), f"{at}.{field}", NODE_ID_RULE)
    return problems


def _check_event_name(problems: Violations, at: str, name: str) -> None:
    if not name:
        problems.add(at, "is required")
    elif len(name) > MAX_EVENT_NAME_LENGTH:
        problems.add(at, f"at most {MAX_EVENT_NAME_LENGTH} characters")


def _check_segment_id(problems: Violations, at: str, segment_id: str) -> None:
    """Identity's own rule for segment ids: an id it would refuse names no segment, and asking
    for its members could only ever fail. Empty is left to publishing (a draft may lack it)."""
    if segment_id and not is_segment_id(segment_id):
        problems.add(at, SEGMENT_ID_RULE)


def _check_trigger(problems: Violations, trigger: EventTrigger) -> None:
    if trigger.kind is TriggerKind.EVENT:
        problems.check(len(trigger.event_name) <= MAX_EVENT_NAME_LENGTH,
                       "event_trigger.event_name", f"at most {MAX_EVENT_NAME_LENGTH} characters")
        if trigger.filter:
            check_expression(problems, "event_trigger.filter", trigger.filter,
                             TRIGGER_JOURNEY_FIELDS)
    elif trigger.kind is TriggerKind.SEGMENT:
        _check_segment_id(problems, "segment_trigger.segment_id", trigger.segment_id)
    elif trigger.kind is TriggerKind.SCHEDULED:
        _check_segment_id(problems, "scheduled_trigger.segment_id", trigger.segment_id)
        check_schedule(problems, "scheduled_trigger", trigger.schedule)


def _check_goal(problems: Violations, goal: Goal) -> None:
    _check_event_name(problems, "goal.event_name", goal.event_name)
    if goal.filter:
        check_expression(problems, "goal.filter", goal.filter)
    _check_duration(problems, "goal.window", goal.window)


def _check_criterion(problems: Violations, at: str, criterion: ExitCriterion) -> None:
    _check_event_name(problems, f"{at}.event_name", criterion.event_name)
    if criterion.filter:
        check_expression(problems, f"{at}.filter", criterion.filter)


def _check_wait(problems: Violations, at: str, wait: WaitAction) -> None:
    kinds = sum(x is not None for x in (wait.duration, wait.local_time, wait.event,
                                        wait.best_time))
    if kinds != 1:
        problems.add(at, "needs exactly one of duration, local_time, event or best_time")
        return
    if wait.best_time is not None:
        delay = wait.best_time.max_delay
        problems.check(timedelta(0) < delay <= MAX_BEST_TIME_DELAY, f"{at}.best_time.max_delay",
                       "must be positive and at most 7 days")
    elif wait.duration is not None:
        _check_duration(problems, f"{at}.duration", wait.duration)
    elif wait.local_time is not None:
        local = wait.local_time
        problems.check(0 <= local.hour <= 23, f"{at}.local_time.hour", "0 to 23")
        problems.check(0 <= local.minute <= 59, f"{at}.local_time.minute", "0 to 59")
        for i, day in enumerate(local.weekdays):
            problems.check(1 <= day <= 7, f"{at}.local_time.weekdays[{i}]",
                           "1 (Monday) to 7 (Sunday)")
        if local.default_time_zone:
            problems.check(time_zone_known(local.default_time_zone),
                           f"{at}.local_time.default_time_zone", "is not an IANA time zone")
    elif wait.event is not None:
        _check_event_name(problems, f"{at}.event.event_name", wait.event.event_name)
        if wait.event.filter:
            check_expression(problems, f"{at}.event.filter", wait.event.filter)
        _check_duration(problems, f"{at}.event.timeout", wait.event.timeout)


def _check_branch(problems: Violations, at: str, branch: BranchAction) -> None:
    if not branch.conditions:
        problems.add(f"{at}.conditions", "at least one condition is required")
    for i, condition in enumerate(branch.conditions):
        check_expression(problems, f"{at}.conditions[{i}].condition", condition.condition)
        problems.check(bool(condition.next_node_id), f"{at}.conditions[{i}].next_node_id",
                       "is required")


def _check_decide(problems: Violations, at: str, decide: DecideAction) -> None:
    if not decide.decision_point:
        problems.add(f"{at}.decision_point", "is required")
    elif not DECISION_POINT_KEY.match(decide.decision_point):
        problems.add(f"{at}.decision_point", DECISION_POINT_KEY_RULE)
    elif decide.decision_point.startswith("journey."):
        problems.add(f"{at}.decision_point", "keys starting with 'journey.' belong to journeys' "
                                             "optimising splits")


def _check_split(problems: Violations, at: str, split: SplitAction) -> None:
    problems.check(0 <= split.min_control_percent <= MAX_MIN_CONTROL_PERCENT,
                   f"{at}.min_control_percent", f"0 to {MAX_MIN_CONTROL_PERCENT}")
    if len(split.arms) < 2:
        problems.add(f"{at}.arms", "at least two arms are required")
    seen: set[str] = set()
    for i, arm in enumerate(split.arms):
        if not NODE_ID.match(arm.name):
            problems.add(f"{at}.arms[{i}].name", NODE_ID_RULE)
        elif arm.name in seen:
            problems.add(f"{at}.arms[{i}].name", f"duplicates arm {arm.name!r}")
        seen.add(arm.name)
        if split.optimize:  # the bandit allocates; percent is ignored
            continue
        problems.check(1 <= arm.percent <= 100, f"{at}.arms[{i}].percent", "1 to 100")
    if split.optimize:
        controls = [i for i, arm in enumerate(split.arms) if arm.control]
        problems.check(len(controls) <= 1, f"{at}.arms[{controls[-1] if controls else 0}].control",
                       "an optimising split has at most one control arm")
        return
    total = sum(arm.percent for arm in split.arms)
    if split.arms and total != 100:
        problems.add(f"{at}.arms", f"percentages must add up to 100, got {total}")


def _check_send(problems: Violations, at: str, send: SendAction) -> None:
    if send.content_version < 0:
        problems.add(f"{at}.content_version", "must not be negative")
    if not send.content_key:
        problems.add(f"{at}.content_key", "is required")
    elif len(send.content_key) > MAX_ID_LENGTH or "/" in send.content_key:
        problems.add(f"{at}.content_key", f"at most {MAX_ID_LENGTH} characters, without '/'")
    if not send.channels:
        problems.add(f"{at}.channel", "is required (or channel_preference)")
    if len(set(send.channel_preference)) != len(send.channel_preference):
        problems.add(f"{at}.channel_preference", "names a channel twice")
    check_topic(problems, f"{at}.topic", send.topic)


def validate_for_publish(display_name: str, graph: JourneyGraph,
                         missing_content: Collection[str] = (),
                         now: datetime | None = None) -> Violations:
    """Every reason the graph cannot run, each as its own violation: the shape problems, then a
    missing trigger (or a schedule without a segment or a time; with ``now``, a one-off time
    already past), a missing or unknown entry node, dangling edges, nodes no enrollment can
    reach, cycles without a wait node or whose only waits are best-time waits (they would send
    in a tight loop), and send nodes naming
    content in ``missing_content`` (keys content said it does not know)."""
    problems = validate_shape(display_name, graph)
    if graph.trigger is None:
        problems.add("event_trigger", "is required: a journey needs a trigger to enroll anyone")
    elif graph.trigger.kind is TriggerKind.EVENT and not graph.trigger.event_name:
        problems.add("event_trigger.event_name", "is required")
    elif graph.trigger.kind is TriggerKind.SEGMENT and not graph.trigger.segment_id:
        problems.add("segment_trigger.segment_id", "is required")
    elif graph.trigger.kind is TriggerKind.SCHEDULED:
        check_publishable(problems, "scheduled_trigger", graph.trigger.segment_id,
                          graph.trigger.schedule, now)
    for index, node in enumerate(graph.nodes):
        if isinstance(node.action, SendAction) and node.action.content_key in missing_content:
            problems.add(f"nodes[{index}].send.content_key",
                         f"names no content item: {node.action.content_key!r}")
        if isinstance(node.action, SplitAction) and node.action.optimize:
            _check_optimised_split(problems, f"nodes[{index}].split", graph)
    if not graph.nodes:
        problems.add("nodes", "at least one node is required")

    index_of, successors, dangling = _adjacency(graph)
    entry_known = graph.entry_node_id in index_of
    if not graph.entry_node_id:
        problems.add("entry_node_id", "is required")
    elif not entry_known:
        problems.add("entry_node_id", f"names no node: {graph.entry_node_id!r}")

    # Dangling edges are reported here and otherwise ignored.
    for index, field, target in dangling:
        problems.add(f"nodes[{index}].{field}", f"names no node: {target!r}")

    if entry_known:
        reached = _reachable(successors, index_of[graph.entry_node_id])
        for index, node in enumerate(graph.nodes):
            if index not in reached and index_of.get(node.id) == index:
                problems.add(f"nodes[{index}]",
                             f"node {node.id!r} cannot be reached from the entry node")

    # A wait node breaks a loop's tight spin, so only cycles through no wait node are refused:
    # look for cycles with the waits' outgoing edges removed. A best-time wait may end at once,
    # so a loop whose only waits are best-time waits is refused below, naming them.
    unwaited = [[] if isinstance(graph.nodes[i].action, WaitAction) else edges
                for i, edges in enumerate(successors)]
    for index, field, path in _cycles(unwaited):
        names = " -> ".join(graph.nodes[i].id for i in path)
        problems.add(f"nodes[{index}].{field}", f"closes a cycle without a wait: {names}")
    for node_id, cycle in unpaced_best_time_waits(graph).items():
        problems.add(f"nodes[{index_of[node_id]}].wait.best_time",
                     f"is in the loop {' -> '.join(cycle)}, which no duration, local_time or "
                     "event wait paces; a best time can be now (no engagement yet, or the "
                     "person's best hour), so the loop could go round at once: add one")
    return problems


def _adjacency(graph: JourneyGraph) -> tuple[dict[str, int], list[list[tuple[str, int]]],
                                             list[tuple[int, str, str]]]:
    """Each node id's index (its first node), each node's edges to known nodes as (field,
    target index), and the dangling edges as (node index, field, target id)."""
    index_of: dict[str, int] = {}
    for index, node in enumerate(graph.nodes):
        index_of.setdefault(node.id, index)
    successors: list[list[tuple[str, int]]] = []
    dangling: list[tuple[int, str, str]] = []
    for index, node in enumerate(graph.nodes):
        targets = []
        for field, target in node.edges():
            if target in index_of:
                targets.append((field, index_of[target]))
            else:
                dangling.append((index, field, target))
        successors.append(targets)
    return index_of, successors, dangling


def unpaced_best_time_waits(graph: JourneyGraph) -> dict[str, tuple[str, ...]]:
    """The best-time waits that are the only waits of a loop, each with one such loop (node ids,
    from the wait back to it). Decisioning answers "now" when the workspace has no engagement
    yet or during the person's best hour, so such a wait can end at once, and its loop would
    go round (and send) without the clock moving. Publishing refuses them; a version published
    before that check waits max_delay there (the engine reads this too)."""
    index_of, successors, _ = _adjacency(graph)
    # Only the waits that always take time break a loop here.
    paced = [[] if isinstance(node.action, WaitAction) and node.action.best_time is None
             else edges for node, edges in zip(graph.nodes, successors, strict=True)]
    found: dict[str, tuple[str, ...]] = {}
    for index, node in enumerate(graph.nodes):
        if (index_of[node.id] != index or not isinstance(node.action, WaitAction)
                or node.action.best_time is None):
            continue
        cycle = _cycle_through(paced, index)
        if cycle:
            found[node.id] = tuple(graph.nodes[i].id for i in cycle)
    return found


def _cycle_through(successors: list[list[tuple[str, int]]], start: int) -> list[int]:
    """A shortest path from ``start`` back to itself (breadth first), or [] when none."""
    parent: dict[int, int] = {}
    queue = [start]
    for current in queue:  # the list grows while it is walked: a queue
        for _, target in successors[current]:
            if target == start:
                path = [current]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if target not in parent:
                parent[target] = current
                queue.append(target)
    return []


def _check_optimised_split(problems: Violations, at: str, graph: JourneyGraph) -> None:
    """Decisioning's reward is the journey's goal: it must exist, fit a reward's window, and
    its filter may read only what a reward filter sees (the event and the profile)."""
    goal = graph.goal
    if goal is None or not goal.event_name:
        problems.add(f"{at}.optimize", "an optimising split needs the journey's goal (its "
                                       "reward): set goal.event_name")
        return
    if goal.window < MIN_REWARD_WINDOW:
        problems.add("goal.window", "at least 1 minute with an optimising split (the window "
                                    "its reward is credited in)")
    if goal.filter:
        try:
            reads = load_expression(goal.filter, "goal.filter").variables
        except Exception:
            return  # does not compile: the shape check reported it
        extra = sorted(reads - REWARD_FILTER_VARIABLES)
        if extra:
            problems.add("goal.filter", f"with an optimising split the goal is decisioning's "
                                        f"reward, whose filter reads only event and profile; it "
                                        f"reads {', '.join(extra)}")


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
