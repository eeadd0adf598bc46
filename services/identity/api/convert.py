"""Protos <-> domain objects of the identity service."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf import duration_pb2

from cjo.common.v1 import common_pb2
from cjo.identity.v1 import (
    backfill_pb2,
    event_pb2,
    identity_settings_pb2,
    profile_pb2,
    workspace_pb2,
)
from cjo_identity.adapters.outbox_payloads import consent_to_proto, event_to_proto
from cjo_identity.domain.backfills import Backfill, BackfillState
from cjo_identity.domain.computed import MAX_WINDOW, MAX_WINDOW_TEXT, Aggregation, ComputedTrait
from cjo_identity.domain.conversions import ConversionEvent
from cjo_identity.domain.events import (
    DEFAULT_MAX_CLOCK_SKEW,
    Event,
    EventType,
    StoredEvent,
    corrected_time,
    parse_event,
)
from cjo_identity.domain.golden import trait_values
from cjo_identity.domain.profiles import Profile
from cjo_identity.domain.settings import (
    CHANNELS,
    IdentitySettings,
    Survivorship,
    TraitRule,
    TypeRule,
    check_settings,
)
from cjo_identity.domain.verification import check_publishable
from cjo_identity.domain.workspaces import ApiKey, Workspace
from cjo_platform.errors import InvalidArgument
from cjo_platform.limits import MAX_EVENT_BYTES, check_encoded_size
from cjo_platform.protobuf import dict_to_struct, from_timestamp, struct_to_dict, to_timestamp

_EVENT_TYPES = {
    event_pb2.EVENT_TYPE_TRACK: EventType.TRACK,
    event_pb2.EVENT_TYPE_IDENTIFY: EventType.IDENTIFY,
}


CHANNEL_NAMES = {
    common_pb2.CHANNEL_EMAIL: "email",
    common_pb2.CHANNEL_SMS: "sms",
    common_pb2.CHANNEL_PUSH: "push",
    common_pb2.CHANNEL_IN_APP: "in_app",
    common_pb2.CHANNEL_WEBHOOK: "webhook",
}
CHANNEL_PROTOS = {name: value for value, name in CHANNEL_NAMES.items()}
assert set(CHANNEL_PROTOS) == set(CHANNELS)
_SURVIVORSHIP = {
    identity_settings_pb2.SURVIVORSHIP_UNSPECIFIED: Survivorship.LATEST,
    identity_settings_pb2.SURVIVORSHIP_LATEST: Survivorship.LATEST,
    identity_settings_pb2.SURVIVORSHIP_FIRST: Survivorship.FIRST,
    identity_settings_pb2.SURVIVORSHIP_SOURCE_PRIORITY: Survivorship.SOURCE_PRIORITY,
    identity_settings_pb2.SURVIVORSHIP_UNION: Survivorship.UNION,
}
_AGGREGATIONS = {
    identity_settings_pb2.COMPUTED_AGGREGATION_COUNT: Aggregation.COUNT,
    identity_settings_pb2.COMPUTED_AGGREGATION_SUM: Aggregation.SUM,
    identity_settings_pb2.COMPUTED_AGGREGATION_LAST_TIME: Aggregation.LAST_TIME,
}
_AGGREGATION_PROTOS = {v: k for k, v in _AGGREGATIONS.items()}
_SURVIVORSHIP_PROTOS = {v: k for k, v in _SURVIVORSHIP.items()
                        if k != identity_settings_pb2.SURVIVORSHIP_UNSPECIFIED}


def event_from_proto(item: event_pb2.Event, now: datetime,
                     settings: IdentitySettings | None = None,
                     publishable_key: str = "",
                     max_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW) -> Event:
    """The parsed event, received at ``now``; ``publishable_key``: the id of the publishable
    key that sent it, whose rules it must then pass (domain/verification.py). Its time is
    corrected (domain/events.corrected_time): at most ``max_skew`` ahead of ``now``, and
    ``now`` for a publishable key. An event larger than ``MAX_EVENT_BYTES`` encoded is refused
    first (it could not travel on to orchestration and decisioning)."""
    check_encoded_size(item.ByteSize(), MAX_EVENT_BYTES)
    settings = settings or IdentitySettings()
    event = parse_event(
        message_id=item.message_id,
        event_type=_EVENT_TYPES.get(item.type),
        name=item.name,
        identifiers=[(i.type, i.value) for i in item.identifiers],
        properties=struct_to_dict(item.properties),
        traits=struct_to_dict(item.traits),
        timestamp=_event_time(item),
        source=item.source,
        now=now,
        known_types=settings.known_types,
        phone_region=settings.default_phone_region,
        profile_id=item.profile_id,
    )
    if publishable_key:
        event = check_publishable(
            event, [(i.type, i.value, i.verification_hash) for i in item.identifiers],
            settings, publishable_key)
    return corrected_time(event, now, max_skew, untrusted=bool(publishable_key))


def _event_time(item: event_pb2.Event) -> datetime | None:
    if not item.HasField("timestamp"):
        return None
    try:
        return from_timestamp(item.timestamp)
    except ValueError:
        raise InvalidArgument.one("timestamp", "is not a valid time") from None


def stored_event_to_proto(stored: StoredEvent) -> event_pb2.StoredEvent:
    return event_pb2.StoredEvent(
        name=f"{profile_name(stored.profile_id)}/events/{stored.event_id}",
        event_id=stored.event_id,
        profile_id=stored.profile_id,
        event=event_to_proto(stored.event),
        receive_time=to_timestamp(stored.receive_time),
        original_timestamp=to_timestamp(stored.event.original_timestamp),
    )


def profile_to_proto(profile: Profile) -> profile_pb2.Profile:
    traits = profile.golden.traits
    return profile_pb2.Profile(
        name=profile_name(profile.profile_id),
        profile_id=profile.profile_id,
        identifiers=[event_pb2.Identifier(type=i.type, value=i.value)
                     for i in profile.identifiers],
        traits=dict_to_struct(trait_values(traits)),
        create_time=to_timestamp(profile.create_time),
        update_time=to_timestamp(profile.update_time),
        merged_from=[profile_pb2.ProfileMerge(
            merged_profile_id=m.merge.merged_profile_id,
            survivor_profile_id=m.merge.survivor_profile_id,
            identifier=event_pb2.Identifier(type=m.merge.link.identifier.type,
                                            value=m.merge.link.identifier.value),
            message_id=m.merge.link.message_id,
            merge_time=to_timestamp(m.time)) for m in profile.merged_from],
        trait_provenance={name: profile_pb2.TraitProvenance(
            source=t.source, event_time=to_timestamp(t.time), message_id=t.message_id)
            for name, t in traits.items()},
        consents=[consent_to_proto(c) for c in sorted(
            profile.golden.consents.values(), key=lambda c: (c.channel, c.topic))],
        computed_traits=dict_to_struct(profile.computed),
        segments=[f"segments/{s}" for s in profile.segments],
    )


def settings_from_proto(item: identity_settings_pb2.IdentitySettings) -> IdentitySettings:
    """Validated settings; INVALID_ARGUMENT naming every bad field."""
    channels = [CHANNEL_NAMES.get(d.channel) for d in item.consent_defaults]
    survivorship = [_SURVIVORSHIP.get(r.survivorship) for r in item.trait_rules]
    unknown = [n for n, s in enumerate(survivorship) if s is None]
    if unknown:
        raise InvalidArgument.one(f"settings.trait_rules[{unknown[0]}].survivorship",
                                  "is not a known survivorship rule")
    bad_aggregation = [n for n, c in enumerate(item.computed_traits)
                       if c.aggregation not in _AGGREGATIONS]
    if bad_aggregation:
        raise InvalidArgument.one(f"settings.computed_traits[{bad_aggregation[0]}].aggregation",
                                  "is required: COUNT, SUM or LAST_TIME")
    windows = [_window(c, f"settings.computed_traits[{n}].window")
               for n, c in enumerate(item.computed_traits)]
    opt_in = dict(IdentitySettings().consent_opt_in)
    opt_in.update({c: d.opt_in for c, d in zip(channels, item.consent_defaults, strict=True)
                   if c is not None})
    settings = IdentitySettings(
        default_phone_region=item.default_phone_region.upper(),
        identifier_types=tuple(TypeRule(r.type, r.limit, tuple(r.blocked_values))
                               for r in item.identifier_types),
        trait_rules=tuple(TraitRule(r.trait, s or Survivorship.LATEST, tuple(r.source_priority))
                          for r, s in zip(item.trait_rules, survivorship, strict=True)),
        consent_opt_in=opt_in,
        computed_traits=tuple(ComputedTrait(
            c.name, _AGGREGATIONS[c.aggregation], c.event_name, c.property, window)
            for c, window in zip(item.computed_traits, windows, strict=True)),
        conversion_events=tuple(ConversionEvent(
            c.event_name, c.revenue_property, c.currency_property, c.currency.strip().upper())
            for c in item.conversion_events),
        verification_required=item.identity_verification.required,
        verification_secret=item.identity_verification.secret,
    )
    check_settings(settings, channels)
    return settings


def _window(item: identity_settings_pb2.ComputedTrait, field: str) -> timedelta | None:
    """The window as a timedelta (None: unset or zero, the whole history), checked before it is
    converted: a Duration can hold ~292 billion years, more than a timedelta (or a date) can."""
    if not item.HasField("window"):
        return None
    seconds, nanos = item.window.seconds, item.window.nanos
    if nanos:
        raise InvalidArgument.one(field, "must be whole seconds")
    if seconds < 0:
        raise InvalidArgument.one(field, "must be positive (or unset for the whole history)")
    if seconds > MAX_WINDOW.total_seconds():
        raise InvalidArgument.one(field, MAX_WINDOW_TEXT)
    return timedelta(seconds=seconds) if seconds else None


_BACKFILL_STATES = {
    BackfillState.PENDING: backfill_pb2.BACKFILL_STATE_PENDING,
    BackfillState.RUNNING: backfill_pb2.BACKFILL_STATE_RUNNING,
    BackfillState.DONE: backfill_pb2.BACKFILL_STATE_DONE,
    BackfillState.FAILED: backfill_pb2.BACKFILL_STATE_FAILED,
}


def backfill_to_proto(backfill: Backfill | None) -> backfill_pb2.Backfill | None:
    if backfill is None:
        return None
    return backfill_pb2.Backfill(
        state=_BACKFILL_STATES[backfill.state], profiles_scanned=backfill.profiles_scanned,
        profiles_total=backfill.profiles_total, create_time=to_timestamp(backfill.create_time),
        start_time=to_timestamp(backfill.start_time), end_time=to_timestamp(backfill.end_time),
        last_error=backfill.last_error, consecutive_failures=backfill.attempts)


def settings_to_proto(settings: IdentitySettings, update_time: datetime | None,
                      backfill: Backfill | None = None
                      ) -> identity_settings_pb2.IdentitySettings:
    return identity_settings_pb2.IdentitySettings(
        computed_traits_backfill=backfill_to_proto(backfill),
        default_phone_region=settings.default_phone_region,
        identifier_types=[identity_settings_pb2.IdentifierTypeRule(
            type=r.type, limit=r.limit, blocked_values=r.blocked_values)
            for r in settings.identifier_types],
        trait_rules=[identity_settings_pb2.TraitRule(
            trait=r.trait, survivorship=_SURVIVORSHIP_PROTOS[r.survivorship],
            source_priority=r.source_priority) for r in settings.trait_rules],
        consent_defaults=[identity_settings_pb2.ChannelConsentDefault(
            channel=CHANNEL_PROTOS[c], opt_in=settings.opt_in(c)) for c in CHANNELS],
        update_time=to_timestamp(update_time),
        computed_traits=[identity_settings_pb2.ComputedTrait(
            name=c.name, aggregation=_AGGREGATION_PROTOS[c.aggregation],
            event_name=c.event_name, property=c.property,
            window=duration_pb2.Duration(seconds=int(c.window.total_seconds()))
            if c.window else None) for c in settings.computed_traits],
        conversion_events=[identity_settings_pb2.ConversionEvent(
            event_name=c.event_name, revenue_property=c.revenue_property,
            currency_property=c.currency_property, currency=c.currency)
            for c in settings.conversion_events],
        # The secret is never returned.
        identity_verification=identity_settings_pb2.IdentityVerification(
            required=settings.verification_required,
            secret_set=bool(settings.verification_secret or settings.verification_secret_error)),
    )


def profile_name(profile_id: str) -> str:
    return f"profiles/{profile_id}"


def profile_id_of(name: str, field: str) -> str:
    return _id_of(name, "profiles/", field, "profiles/{profile_id}")


def workspace_id_of(name: str, field: str) -> str:
    return _id_of(name, "workspaces/", field, "workspaces/{workspace_id}")


def api_key_name_of(name: str, field: str) -> tuple[str, str]:
    """(workspace id, key id) of ``workspaces/{workspace_id}/apiKeys/{key_id}``."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "workspaces" or parts[2] != "apiKeys" or not parts[1] \
            or not parts[3]:
        raise InvalidArgument.one(field, "must be workspaces/{workspace_id}/apiKeys/{key_id}")
    return parts[1], parts[3]


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
    proto = workspace_pb2.ApiKey(
        name=f"workspaces/{key.workspace_id}/apiKeys/{key.key_id}",
        key_id=key.key_id,
        display_name=key.display_name,
        create_time=to_timestamp(key.create_time),
        scope=workspace_pb2.ApiKeyScope.ValueType(key.scope.value),
        secret_hint=key.hint(),
    )
    if key.previous_secret_hash is not None and key.previous_secret_expire_time is not None:
        proto.previous_secret_expire_time.CopyFrom(to_timestamp(key.previous_secret_expire_time))
    if key.revoke_time is not None:
        proto.revoke_time.CopyFrom(to_timestamp(key.revoke_time))
    if key.last_use_time is not None:
        proto.last_use_time.CopyFrom(to_timestamp(key.last_use_time))
    return proto
