"""Protos <-> domain objects of the identity service."""

from __future__ import annotations

from datetime import datetime

from cjo.identity.v1 import event_pb2, profile_pb2, workspace_pb2
from cjo_identity.domain.events import Event, EventType, StoredEvent, parse_event
from cjo_identity.domain.profiles import Profile
from cjo_identity.domain.traits import trait_values
from cjo_identity.domain.workspaces import ApiKey, Workspace
from cjo_platform.errors import InvalidArgument
from cjo_platform.protobuf import dict_to_struct, from_timestamp, struct_to_dict, to_timestamp

_EVENT_TYPES = {
    event_pb2.EVENT_TYPE_TRACK: EventType.TRACK,
    event_pb2.EVENT_TYPE_IDENTIFY: EventType.IDENTIFY,
}
_EVENT_TYPE_PROTOS = {v: k for k, v in _EVENT_TYPES.items()}


def event_from_proto(item: event_pb2.Event, now: datetime) -> Event:
    return parse_event(
        message_id=item.message_id,
        event_type=_EVENT_TYPES.get(item.type),
        name=item.name,
        identifiers=[(i.type, i.value) for i in item.identifiers],
        properties=struct_to_dict(item.properties),
        traits=struct_to_dict(item.traits),
        timestamp=_event_time(item),
        source=item.source,
        now=now,
    )


def _event_time(item: event_pb2.Event) -> datetime | None:
    if not item.HasField("timestamp"):
        return None
    try:
        return from_timestamp(item.timestamp)
    except ValueError:
        raise InvalidArgument.one("timestamp", "is not a valid time") from None


def event_to_proto(event: Event) -> event_pb2.Event:
    return event_pb2.Event(
        message_id=event.message_id,
        type=_EVENT_TYPE_PROTOS[event.type],
        name=event.name,
        identifiers=[event_pb2.Identifier(type=i.type.value, value=i.value)
                     for i in event.identifiers],
        properties=dict_to_struct(dict(event.properties)),
        traits=dict_to_struct(dict(event.traits)),
        timestamp=to_timestamp(event.timestamp),
        source=event.source,
    )


def stored_event_to_proto(stored: StoredEvent) -> event_pb2.StoredEvent:
    return event_pb2.StoredEvent(
        name=f"{profile_name(stored.profile_id)}/events/{stored.event_id}",
        event_id=stored.event_id,
        profile_id=stored.profile_id,
        event=event_to_proto(stored.event),
        receive_time=to_timestamp(stored.receive_time),
    )


def profile_to_proto(profile: Profile) -> profile_pb2.Profile:
    return profile_pb2.Profile(
        name=profile_name(profile.profile_id),
        profile_id=profile.profile_id,
        identifiers=[event_pb2.Identifier(type=i.type.value, value=i.value)
                     for i in profile.identifiers],
        traits=dict_to_struct(trait_values(profile.traits)),
        create_time=to_timestamp(profile.create_time),
        update_time=to_timestamp(profile.update_time),
    )


def profile_name(profile_id: str) -> str:
    return f"profiles/{profile_id}"


def profile_id_of(name: str, field: str) -> str:
    return _id_of(name, "profiles/", field, "profiles/{profile_id}")


def workspace_id_of(name: str, field: str) -> str:
    return _id_of(name, "workspaces/", field, "workspaces/{workspace_id}")


def _id_of(name: str, prefix: str, field: str, pattern: str) -> str:
    rest = name.removeprefix(prefix)
    if not name.startswith(prefix) or not rest or "/" in rest:
        raise InvalidArgument.one(field, f"must be {pattern}")
    return rest


def workspace_to_proto(workspace: Workspace) -> workspace_pb2.Workspace:
    return workspace_pb2.Workspace(
        name=f"workspaces/{workspace.workspace_id}",
        workspace_id=workspace.workspace_id,
        display_name=workspace.display_name,
        create_time=to_timestamp(workspace.create_time),
    )


def api_key_to_proto(key: ApiKey) -> workspace_pb2.ApiKey:
    """Without the secret: it is set only on the one answer that reveals it."""
    return workspace_pb2.ApiKey(
        name=f"workspaces/{key.workspace_id}/apiKeys/{key.key_id}",
        key_id=key.key_id,
        display_name=key.display_name,
        create_time=to_timestamp(key.create_time),
    )
