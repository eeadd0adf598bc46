"""Protos to what the templates show: plain dicts and the domain's layouts."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import consent_pb2
from cjo.orchestration.v1 import enrollment_pb2, journey_pb2
from cjo_console.domain.charts import IntervalChart, IntervalRow, interval_chart
from cjo_console.domain.graph import Exit, GraphLayout, NodeSpec, layout


def enum_label(enum: Any, value: int, prefix: str) -> str:
    """`JOURNEY_STATE_ACTIVE` -> `active`."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower().replace("_", " ")


def journey_state(journey: Any) -> str:
    return enum_label(journey_pb2.JourneyState, journey.state, "JOURNEY_STATE_")


def trigger(journey: Any) -> str:
    kind = journey.WhichOneof("trigger")
    if kind == "event_trigger":
        return f"on event {journey.event_trigger.event_name}"
    if kind == "segment_trigger":
        return f"on entering segment {journey.segment_trigger.segment_id}"
    if kind == "scheduled_trigger":
        return f"scheduled for segment {journey.scheduled_trigger.segment_id}"
    if kind == "api_trigger":
        return "by API (Enroll)"
    return "no trigger"


def channel(value: int) -> str:
    return enum_label(common_pb2.Channel, value, "CHANNEL_")


def _duration(d: Any) -> str:
    seconds = d.seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def node_spec(node: Any) -> NodeSpec:
    kind = node.WhichOneof("kind") or "unknown"
    body: Any = getattr(node, kind) if kind != "unknown" else None
    exits: list[Exit] = []
    summary = ""
    if kind == "send":
        summary = f"{channel(body.channel)}: {body.content_key}"
        exits = [Exit(body.next_node_id)]
    elif kind == "wait":
        until = body.WhichOneof("until")
        if until == "duration":
            summary = f"for {_duration(body.duration)}"
        elif until == "event":
            summary = f"for {body.event.event_name or 'a message event'}"
            exits = [Exit(body.event.event_next_node_id, "event"),
                     Exit(body.event.timeout_next_node_id, "timeout")]
        elif until == "local_time":
            summary = f"until {body.local_time.hour:02d}:{body.local_time.minute:02d}"
        elif until == "best_time":
            summary = f"best time ({channel(body.best_time.channel)})"
        if body.next_node_id:
            exits.append(Exit(body.next_node_id))
    elif kind == "branch":
        summary = f"{len(body.conditions)} condition(s)"
        exits = [Exit(c.next_node_id, c.condition[:24]) for c in body.conditions]
        exits.append(Exit(body.else_next_node_id, "else"))
    elif kind == "split":
        summary = " / ".join(f"{a.name} {a.percent}%" for a in body.arms)
        exits = [Exit(a.next_node_id, a.name) for a in body.arms]
    elif kind == "decide":
        summary = body.decision_point
        exits = [Exit(body.next_node_id), Exit(body.no_action_next_node_id, "no action")]
    elif kind == "update_profile":
        summary = ", ".join(sorted(body.traits.fields))[:40]
        exits = [Exit(body.next_node_id)]
    label = kind.replace("_", " ")
    return NodeSpec(node.id, label, summary, tuple(e for e in exits if e.target))


def journey_graph(journey: Any) -> GraphLayout:
    return layout(journey.entry_node_id, [node_spec(n) for n in journey.nodes])


EMPTY_COUNTS = {"entered": 0, "in_progress": 0, "completed": 0, "dropped": 0, "failed": 0}


def live_counts(journey: Any, funnel: Any) -> dict[str, Any]:
    """Per-node counts of the published version (the one people enter now), and the journey's
    conversion to its goal, as the page's script reads them."""
    versions = list(funnel.versions)
    current = next((v for v in versions if v.journey_version == journey.published_version),
                   versions[-1] if versions else None)
    nodes = {n.id: dict(EMPTY_COUNTS) for n in journey.nodes}
    summary = {"version": journey.published_version, "entered": 0, "converted": 0,
               "conversion_rate": 0.0}
    if current is not None:
        for n in current.nodes:
            nodes[n.node_id] = {"entered": n.entered, "in_progress": n.in_progress,
                                "completed": n.completed, "dropped": n.dropped,
                                "failed": n.failed}
        summary = {"version": current.journey_version, "entered": current.entered_profiles,
                   "converted": current.converted_profiles,
                   "conversion_rate": round(current.conversion_rate, 4)}
    return {"state": journey_state(journey), "nodes": nodes, "conversion": summary,
            "versions": [{"version": v.journey_version, "entered": v.entered_profiles,
                          "converted": v.converted_profiles,
                          "conversion_rate": round(v.conversion_rate, 4)} for v in versions]}


def as_json(message: Any) -> str:
    return json.dumps(json_format.MessageToDict(message), indent=2, sort_keys=True)


def timestamp(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return str(ts.ToDatetime().strftime("%Y-%m-%d %H:%M:%S UTC"))


def profile_view(profile: Any) -> dict[str, Any]:
    traits = json_format.MessageToDict(profile.traits)
    provenance = profile.trait_provenance
    return {
        "profile_id": profile.profile_id,
        "identifiers": [(i.type, i.value) for i in profile.identifiers],
        "traits": [{"name": k, "value": json.dumps(v),
                    "source": provenance[k].source if k in provenance else "",
                    "time": timestamp(provenance[k].event_time) if k in provenance else ""}
                   for k, v in sorted(traits.items())],
        "computed": sorted((k, json.dumps(v)) for k, v in
                           json_format.MessageToDict(profile.computed_traits).items()),
        "consents": [{"channel": channel(c.channel), "topic": c.topic or "(all)",
                      "state": enum_label(consent_pb2.ConsentState, c.state, "CONSENT_STATE_"),
                      "source": c.source, "time": timestamp(c.update_time)}
                     for c in profile.consents],
        "segments": list(profile.segments),
        "merged_from": [m.merged_profile_id for m in profile.merged_from],
        "created": timestamp(profile.create_time),
        "updated": timestamp(profile.update_time),
    }


def enrollment_view(enrollment: Any, journey_names: dict[str, str]) -> dict[str, Any]:
    return {
        "journey_id": enrollment.journey_id,
        "journey": journey_names.get(enrollment.journey_id, enrollment.journey_id),
        "version": enrollment.journey_version,
        "state": enum_label(enrollment_pb2.EnrollmentState, enrollment.state,
                            "ENROLLMENT_STATE_"),
        "current": enrollment.current_node_id,
        "exit_reason": enrollment.exit_reason,
        "path": [{"node": s.node_id,
                  "outcome": enum_label(enrollment_pb2.StepOutcome, s.outcome, "STEP_OUTCOME_"),
                  "time": timestamp(s.time), "detail": s.detail} for s in enrollment.steps],
        "created": timestamp(enrollment.create_time),
    }


def message_view(message: Any) -> dict[str, Any]:
    content = message.content
    body = content.WhichOneof("body") or ""
    view: dict[str, Any] = {
        "message_id": message.message_id,
        "status": enum_label(message_pb2.MessageStatus, message.status, "MESSAGE_STATUS_"),
        "channel": channel(content.channel),
        "content_key": content.content_key,
        "content_version": content.content_version,
        "variant": content.variant,
        "locale": content.locale,
        "recipient": message.recipient.address,
        "profile_id": message.recipient.profile_id,
        "journey_id": message.journey_id,
        "error": message.error,
        "provider": message.provider,
        "attempts": message.attempts,
        "created": timestamp(message.create_time),
        "updated": timestamp(message.update_time),
        "kind": body,
        "subject": "",
        "html": "",
        "text": "",
    }
    if body == "email":
        view.update(subject=content.email.subject, html=content.email.html,
                    text=content.email.text)
    elif body == "sms":
        view.update(text=content.sms.text)
    elif body == "push":
        view.update(subject=content.push.title, text=content.push.body)
    elif body == "in_app":
        view.update(subject=content.in_app.title, html=content.in_app.body)
    elif body == "webhook":
        view.update(text=content.webhook.json_body)
    return view


def experiment_chart(results: Any) -> IntervalChart:
    rows = [IntervalRow(a.arm, a.absolute_lift, a.absolute_lift_ci.lower,
                        a.absolute_lift_ci.upper) for a in results.arms if not a.control]
    return interval_chart(rows, reference=0.0)


def decision_chart(report: Any) -> IntervalChart:
    rows = [IntervalRow(a.action, a.posterior_mean, a.posterior_lower, a.posterior_upper)
            for a in report.actions]
    return interval_chart(rows, reference=None)
