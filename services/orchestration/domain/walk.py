"""Walking nodes: run an enrollment's current node and every control node after it (branch,
split, exit, a wait's timer) until it needs I/O (a send, a profile update), parks at a wait, or
ends; then apply the answer to that I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import assert_never

from cjo_orchestration.domain.conditions import (
    condition_holds,
    error_detail,
    journey_variables,
)
from cjo_orchestration.domain.decisions import arm_of_action, split_point_key
from cjo_orchestration.domain.enrollment import (
    Enrollment,
    EnrollmentState,
    ExitReason,
    FactKind,
    FactRecord,
    Step,
    StepOutcome,
    evolve,
)
from cjo_orchestration.domain.journeys import (
    Action,
    BranchAction,
    DecideAction,
    ExitAction,
    FailurePolicy,
    JourneyGraph,
    SendAction,
    SplitAction,
    SplitArm,
    UpdateProfileAction,
    WaitAction,
)
from cjo_orchestration.domain.orders import (
    ADDRESS_TRAITS,
    Decided,
    DecideOrder,
    Deferred,
    Order,
    ProfileOrder,
    Rejected,
    SendOrder,
    SendResult,
    SendTimeFound,
    SendTimeOrder,
    Sent,
    Unavailable,
    identity_identifiers,
    recipient_address,
    send_key,
)
from cjo_orchestration.domain.splits import experiment_id, split_arm
from cjo_orchestration.domain.timing import wait_until
from cjo_orchestration.domain.transitions import (
    KEEP_WALKING,
    Transition,
    end_enrollment,
    failure_fact,
    move_on,
    visited,
)
from cjo_platform.backoff import RetryPolicy
from cjo_platform.profiles import with_traits


def advance(enrollment: Enrollment, graph: JourneyGraph, now: datetime) -> Transition:
    """Run the enrollment's current node and every control node after it, until it needs I/O
    (returned as ``send``), waits, or ends."""
    return _walk(enrollment, graph, now, (), ())


def after_send(enrollment: Enrollment, graph: JourneyGraph, order: Order,
               result: SendResult, now: datetime, policy: RetryPolicy) -> Transition:
    """Apply the answer to ``order``: move on after success, follow the node's failure policy
    after a permanent failure, or retry later with backoff after a transient one."""
    if isinstance(order, SendTimeOrder):
        return _send_time_answered(enrollment, order, result, now, policy)
    if isinstance(result, Unavailable):  # the step round waits these out; never a failure
        result = Deferred(result.detail)
    if isinstance(result, Deferred):
        attempts = enrollment.attempts + 1
        if not policy.exhausted(attempts):
            return retry_later(enrollment, result.detail, attempts, now, policy)
        result = Rejected(f"gave up after {attempts} attempts: {result.detail}")
    node = graph.node(order.node_id)
    action = node.action if node else None
    if isinstance(order, DecideOrder) and isinstance(result, Decided):
        if isinstance(action, SplitAction):
            arm = arm_of_action(action, enrollment.journey_id, order.node_id, result.action)
            if arm is None:
                result = Rejected(f"decisioning chose {result.action or 'no action'!r}, which is "
                                  f"no arm of this split (decision {result.decision_id})")
            else:
                return _settle(_arm_chosen(enrollment, action, order, arm, result, now), graph,
                               now)
        elif isinstance(action, DecideAction):
            return _settle(_decided(enrollment, action, order, result, now), graph, now)
    if not isinstance(result, Sent):
        detail = result.detail if isinstance(result, Rejected) else (
            f"the answer {type(result).__name__} does not fit node {order.node_id!r}")
        step = Step(order.node_id, order.visit, StepOutcome.FAILED, detail, now)
        return _settle(_failed(enrollment, action, step, now), graph, now)
    return _settle(_succeeded(enrollment, action, order, result, now), graph, now)


def _decided(enrollment: Enrollment, action: DecideAction, order: DecideOrder,
             result: Decided, now: datetime) -> Transition:
    """A decide node's action was sent (its MESSAGE_REQUESTED fact carries the decision id, so
    the reward finds the decision), or no action was eligible (the no-action edge)."""
    if not result.action:
        step = Step(order.node_id, order.visit, StepOutcome.SUCCEEDED,
                    f"no action (decision {result.decision_id})", now)
        return move_on(visited(enrollment, order.node_id), action.no_action_next_node_id, now,
                       [step], [])
    step = Step(order.node_id, order.visit, StepOutcome.SUCCEEDED,
                f"{result.message_id} (action {result.action}, decision {result.decision_id})",
                now)
    fact = enrollment.fact(f"requested:{order.request_id}", FactKind.MESSAGE_REQUESTED, now,
                           message_id=result.message_id, node_id=order.node_id,
                           channel=result.channel.value if result.channel else None,
                           content_key=result.content_key, decision_id=result.decision_id)
    return move_on(visited(enrollment, order.node_id), action.next_node_id, now, [step], [fact])


def _arm_chosen(enrollment: Enrollment, split: SplitAction, order: DecideOrder, arm_name: str,
                result: Decided, now: datetime) -> Transition:
    arm = next(a for a in split.arms if a.name == arm_name)
    here = _Here(enrollment, order.node_id, order.visit, now, (), ())
    # The allocation is adaptive: no fixed weight to report (arm_weight 0).
    return _enter_arm(here, arm, arm_weight=0.0, decision_id=result.decision_id)


def _send_time_answered(enrollment: Enrollment, order: SendTimeOrder, result: SendResult,
                        now: datetime, policy: RetryPolicy) -> Transition:
    """Park a best-time wait at the answer, never past its deadline. Without an answer (a
    refusal), it waits until the deadline; a transient failure asks again after a backoff,
    still never past the deadline (the walk then moves on)."""
    if isinstance(result, Deferred | Unavailable):
        attempts = enrollment.attempts + 1
        retry = min(now + policy.delay(attempts), order.deadline)
        return Transition(evolve(enrollment, attempts=attempts, last_error=result.detail,
                                 due_time=retry, update_time=now))
    if isinstance(result, SendTimeFound):
        until = min(max(result.send_time, now), order.deadline)
        detail = f"until {until.isoformat()} (best time, {result.source or 'decisioning'})"
        error = ""
    else:
        until = order.deadline
        why = result.detail if isinstance(result, Rejected) else type(result).__name__
        detail = f"until {until.isoformat()} (max_delay: no best time: {why})"
        error = why
    parked = evolve(enrollment, waiting=True, due_time=until, wait_deadline=None, attempts=0,
                    last_error=error, update_time=now)
    return Transition(parked, (Step(order.node_id, order.visit, StepOutcome.WAITING, detail,
                                    now),))


# --- results of sends --------------------------------------------------------------------------


def retry_later(enrollment: Enrollment, error: str, attempts: int, now: datetime,
                policy: RetryPolicy) -> Transition:
    """Try the same order again after the policy's backoff for ``attempts`` failures."""
    return Transition(evolve(enrollment, attempts=attempts, last_error=error,
                             due_time=now + policy.delay(attempts), update_time=now))


def _succeeded(enrollment: Enrollment, action: Action | None, order: Order, result: Sent,
               now: datetime) -> Transition:
    next_id = (action.next_node_id if isinstance(action, SendAction | UpdateProfileAction)
               else "")
    step = Step(order.node_id, order.visit, StepOutcome.SUCCEEDED, result.message_id, now)
    facts: list[FactRecord] = []
    if isinstance(order, ProfileOrder):
        # Identity accepted the traits: the nodes walked next in this pass read them (the next
        # round reads them back from identity).
        enrollment = evolve(enrollment, traits=with_traits(enrollment.traits, order.traits))
    if isinstance(order, SendOrder):
        facts.append(enrollment.fact(f"requested:{order.idempotency_key}",
                                     FactKind.MESSAGE_REQUESTED, now,
                                     message_id=result.message_id, node_id=order.node_id,
                                     channel=order.channel.value,
                                     content_key=order.content_key))
    return move_on(visited(enrollment, order.node_id), next_id, now, [step], facts)


def _failed(enrollment: Enrollment, action: Action | None, failed: Step, now: datetime,
            steps: Sequence[Step] = (), facts: Sequence[FactRecord] = ()) -> Transition:
    """A permanent failure at a node, counted there (its NODE_FAILED fact): continue past it
    when its policy says so, else end there."""
    facts = (*facts, failure_fact(enrollment, failed))
    if (isinstance(action, SendAction | DecideAction)
            and action.on_failure is FailurePolicy.CONTINUE):
        # Inside a walk the caller keeps walking; after I/O, after_send settles it.
        return move_on(visited(enrollment, failed.node_id), action.next_node_id, now,
                       [*steps, failed], facts)
    return end_enrollment(enrollment, EnrollmentState.FAILED, now, [*steps, failed], facts,
                          error=failed.detail, reason=ExitReason.FAILED)


def _settle(transition: Transition, graph: JourneyGraph, now: datetime) -> Transition:
    """Run the control nodes after a finished I/O step; the next I/O is due now but runs in a
    later pass, with its own claim and trace."""
    if transition.send is KEEP_WALKING:
        transition = _walk(transition.enrollment, graph, now, transition.steps,
                           transition.facts, transition.error)
    if isinstance(transition.send, SendTimeOrder):
        # Arriving at a best-time wait parked the enrollment until its max_delay; the question
        # to decisioning is this order, so it is due now, or it would never be asked.
        transition = replace(transition, enrollment=evolve(transition.enrollment, due_time=now))
    return replace(transition, send=None)


# --- walking -----------------------------------------------------------------------------------


def _walk(enrollment: Enrollment, graph: JourneyGraph, now: datetime, steps: Sequence[Step],
          facts: Sequence[FactRecord], error: str = "") -> Transition:
    # A published graph has no cycle without a wait, so the walk ends within len(nodes) + 1
    # control steps; the bound only guards against a corrupt version.
    for _ in range(len(graph.nodes) + 2):
        try:
            transition = _run_node(enrollment, graph, now, steps, facts)
        except Exception as exc:
            # A node that cannot run for this profile (a branch condition that fails to
            # evaluate, say) fails this enrollment only, by the node's failure policy.
            transition = _node_failed(enrollment, graph, now, steps, facts, error_detail(exc))
        error = transition.error or error
        if transition.send is not KEEP_WALKING:
            return replace(transition, error=error) if error else transition
        enrollment, steps, facts = transition.enrollment, transition.steps, transition.facts
    detail = "the walk did not stop at a wait, a send or an exit; the graph loops"
    return replace(end_enrollment(enrollment, EnrollmentState.FAILED, now, steps, facts,
                                  error=detail, reason=ExitReason.FAILED), error=error or detail)


def _node_failed(enrollment: Enrollment, graph: JourneyGraph, now: datetime,
                 steps: Sequence[Step], facts: Sequence[FactRecord], detail: str) -> Transition:
    """The current node raised: a FAILED step there with the error, then the node's failure
    policy (continue past a send that says so, else the enrollment fails)."""
    node_id = enrollment.current_node_id
    node = graph.node(node_id)
    failed = Step(node_id, enrollment.visits.get(node_id, 0), StepOutcome.FAILED, detail, now)
    return replace(_failed(enrollment, node.action if node else None, failed, now, steps, facts),
                   error=detail)


def fail_enrollment(enrollment: Enrollment, now: datetime, detail: str) -> Transition:
    """End an active enrollment as FAILED at the node it stands at, with ``detail`` in its step
    and its last error: what an item whose handling raised is left in."""
    node_id = enrollment.current_node_id
    failed = Step(node_id, enrollment.visits.get(node_id, 0), StepOutcome.FAILED, detail, now)
    return replace(end_enrollment(enrollment, EnrollmentState.FAILED, now, [failed], (),
                                  error=detail, reason=ExitReason.FAILED), error=detail)


@dataclass(frozen=True, slots=True)
class _Here:
    """The node a walk runs: where the enrollment stands, and what the walk did before it."""

    enrollment: Enrollment
    node_id: str
    visit: int
    now: datetime
    steps: Sequence[Step]
    facts: Sequence[FactRecord]

    def step(self, outcome: StepOutcome, detail: str) -> Step:
        return Step(self.node_id, self.visit, outcome, detail, self.now)

    def take(self, next_id: str, detail: str) -> Transition:
        """Leave this control node along ``next_id``."""
        return move_on(visited(self.enrollment, self.node_id), next_id, self.now,
                       [*self.steps, self.step(StepOutcome.SUCCEEDED, detail)], self.facts)

    def wait_for(self, order: Order) -> Transition:
        return Transition(self.enrollment, tuple(self.steps), tuple(self.facts), order)

    def fail(self, action: Action, detail: str) -> Transition:
        return _failed(self.enrollment, action, self.step(StepOutcome.FAILED, detail),
                       self.now, self.steps, self.facts)


def _run_node(enrollment: Enrollment, graph: JourneyGraph, now: datetime,
              steps: Sequence[Step], facts: Sequence[FactRecord]) -> Transition:
    node_id = enrollment.current_node_id
    here = _Here(enrollment, node_id, enrollment.visits.get(node_id, 0), now, steps, facts)
    node = graph.node(node_id)
    if node is None or node.action is None:
        detail = f"node {node_id!r} is not in version {enrollment.journey_version}"
        return end_enrollment(enrollment, EnrollmentState.FAILED, now,
                              [*steps, here.step(StepOutcome.FAILED, detail)], facts,
                              error=detail, reason=ExitReason.FAILED)
    match node.action:
        case SendAction() as send:
            return _send(here, send)
        case UpdateProfileAction() as update:
            return _update_profile(here, update)
        case WaitAction() as wait:
            return _wait(here, wait, node_id in graph.unpaced_best_times)
        case BranchAction() as branch:
            return _branch(here, branch)
        case SplitAction() as split:
            return _split(here, split)
        case DecideAction() as decide:
            return _decide(here, decide)
        case ExitAction():
            return _exit(here)
        case unknown:
            assert_never(unknown)


def _send(here: _Here, action: SendAction) -> Transition:
    """Order a send on the first channel the profile has an address on."""
    traits = here.enrollment.traits
    for channel in action.channels:
        address = recipient_address(channel, traits)
        if address:
            return here.wait_for(SendOrder(
                here.node_id, here.visit, action.content_key, channel, address,
                send_key(here.enrollment.enrollment_id, here.node_id, here.visit),
                action.content_version, action.topic, action.transactional))
    # Known before any call: fail the step now rather than render for nobody.
    wanted = ", ".join(f"{c.value} (trait or identifier {ADDRESS_TRAITS.get(c, '-')!r})"
                       for c in action.channels)
    return here.fail(action, f"the profile has no address on any channel: {wanted}")


def _update_profile(here: _Here, action: UpdateProfileAction) -> Transition:
    identifiers = identity_identifiers(here.enrollment.traits)
    if not identifiers:
        return here.fail(action,
                         "the profile has no identifier (nor user_id, email or phone trait) to "
                         "identify it by")
    return here.wait_for(ProfileOrder(
        here.node_id, here.visit, dict(action.traits), identifiers,
        send_key(here.enrollment.enrollment_id, here.node_id, here.visit)))


def _wait(here: _Here, action: WaitAction, unpaced: bool = False) -> Transition:
    """Park the enrollment until the timer; once it fired, leave by the timer's edge (an event
    wait's timeout edge). ``unpaced``: a best-time wait that is the only wait of a loop, in a
    version published before publishing refused that; it waits max_delay, never asking
    decisioning, so its loop cannot go round without the clock moving."""
    if action.best_time is not None and not unpaced:
        return _best_time(here, action)
    if here.enrollment.waiting:
        # The timer fired: the duration passed, the local time came, or the event timed out.
        if action.event is not None:
            return here.take(action.event.timeout_next_node_id, "timeout")
        return here.take(action.next_node_id, "timer")
    until, detail = wait_until(action, here.enrollment.traits, here.now)
    parked = evolve(here.enrollment, waiting=True, due_time=until, update_time=here.now,
                    attempts=0)
    return Transition(parked, (*here.steps, here.step(StepOutcome.WAITING, detail)),
                      tuple(here.facts))


def _best_time(here: _Here, action: WaitAction) -> Transition:
    """Arriving: park until arrival + max_delay at the latest, and ask decisioning for the
    person's best time (the answer moves the timer earlier). While decisioning cannot answer,
    the question is repeated after a backoff, until the deadline; then the wait ends anyway."""
    assert action.best_time is not None
    enrollment = here.enrollment
    deadline = enrollment.wait_deadline
    if enrollment.waiting and (deadline is None or here.now >= deadline):
        detail = "timer" if deadline is None else (
            f"max_delay reached without a best time ({enrollment.last_error})"
            if enrollment.last_error else "max_delay reached without a best time")
        return here.take(action.next_node_id, detail)
    if not enrollment.waiting or deadline is None:
        deadline = here.now + action.best_time.max_delay
        enrollment = evolve(enrollment, waiting=True, due_time=deadline,
                            wait_deadline=deadline, attempts=0, update_time=here.now)
    return Transition(enrollment, tuple(here.steps), tuple(here.facts), SendTimeOrder(
        here.node_id, here.visit, action.best_time.channel, deadline,
        action.best_time.max_delay))


def _decide(here: _Here, action: DecideAction) -> Transition:
    """Ask decisioning (the step round batches the node's enrollments into one BatchDecide);
    the request id is the step's key, so a retry or replay gets the same decision."""
    return here.wait_for(DecideOrder(
        here.node_id, here.visit, action.decision_point,
        send_key(here.enrollment.enrollment_id, here.node_id, here.visit), action.channel))


def _branch(here: _Here, action: BranchAction) -> Transition:
    """Follow the first condition that holds, else the else edge."""
    enrollment = here.enrollment
    journey = journey_variables(enrollment)
    for index, condition in enumerate(action.conditions):
        if condition_holds(condition.condition, "branch.condition", enrollment.properties,
                           enrollment.traits, journey):
            return here.take(condition.next_node_id, f"condition {index}")
    return here.take(action.else_next_node_id, "else")


def _split(here: _Here, action: SplitAction) -> Transition:
    """Send the profile down its arm; the control arm exits the journey."""
    enrollment = here.enrollment
    if action.optimize:
        # Decisioning's bandit picks the arm (the step round asks for the node's people in one
        # BatchDecide), at the point publishing created for this node.
        return here.wait_for(DecideOrder(
            here.node_id, here.visit, split_point_key(enrollment.journey_id, here.node_id, action),
            send_key(enrollment.enrollment_id, here.node_id, here.visit), split=True))
    arm = split_arm(action, enrollment.journey_id, enrollment.profile_id)
    return _enter_arm(here, arm, arm_weight=float(arm.percent))


def _enter_arm(here: _Here, arm: SplitArm, arm_weight: float,
               decision_id: str = "") -> Transition:
    enrollment = here.enrollment
    step = here.step(StepOutcome.SUCCEEDED, f"arm {arm.name}" + (
        f" (decision {decision_id})" if decision_id else ""))
    # The exposure analytics' experiment reports count (the node's arrival was counted already);
    # conversions count for it until the enrollment's goal deadline (the goal's window).
    exposure = enrollment.fact(
        f"exposed:{enrollment.enrollment_id}:{here.node_id}:{here.visit}",
        FactKind.EXPERIMENT_EXPOSED, here.now, node_id=here.node_id, detail=f"arm {arm.name}",
        experiment_id=experiment_id(enrollment.journey_id, here.node_id), arm=arm.name,
        control=arm.control, arm_weight=arm_weight,
        conversion_deadline=enrollment.goal_deadline,
        **({"decision_id": decision_id} if decision_id else {}))
    facts = [*here.facts, exposure]
    moved = visited(enrollment, here.node_id)
    if arm.control:
        return end_enrollment(moved, EnrollmentState.EXITED, here.now, [*here.steps, step],
                              facts, reason=ExitReason.CONTROL)
    return move_on(moved, arm.next_node_id, here.now, [*here.steps, step], facts)


def _exit(here: _Here) -> Transition:
    return end_enrollment(visited(here.enrollment, here.node_id), EnrollmentState.COMPLETED,
                          here.now, [*here.steps, here.step(StepOutcome.SUCCEEDED, "")],
                          here.facts, reason=ExitReason.COMPLETED)
