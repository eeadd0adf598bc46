"""RecordEvents reads a forwarded event's details (its time, the CEL `event` and `profile`: the
profile's traits, consents, segments) only for an event some point rewards: most events reward
nothing, and building those maps was most of RecordEvents' CPU per event. Read, they are what
the event carried, built once."""

from __future__ import annotations

from datetime import UTC, datetime
from unittest import mock

from outcomes_support import merged, track

from cjo_decisioning.api import outcomes as api

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_details_are_built_when_first_read_and_once() -> None:
    forwarded = track("e1", "p1", "order_completed", AT, {"total": 30}, {"plan": "pro"})
    with mock.patch.object(api, "profile_view", wraps=api.profile_view) as view:
        event = api.track_event(forwarded)
        assert (event.event_id, event.profile_id, event.name) == ("e1", "p1", "order_completed")
        assert view.call_count == 0
        assert event.time == AT
        assert event.event["properties"] == {"total": 30}
        assert event.profile["plan"] == "pro"
        assert event.profile is event.profile and view.call_count == 1


def test_a_merge_names_the_profile_merged_away_without_its_details() -> None:
    with mock.patch.object(api, "profile_view", wraps=api.profile_view) as view:
        event = api.track_event(merged("p-old", "p-new", AT))
        assert (event.merged_profile_id, event.profile_id) == ("p-old", "p-new")
        assert view.call_count == 0
