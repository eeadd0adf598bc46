"""How `cjo apply` compares a manifest with what the server holds: removed fields are changes,
the server's own defaults are not."""

from __future__ import annotations

from cjo_cli.compare import compare
from cjo_cli.resources import KIND_TABLE

JOURNEY_DEFAULTS = KIND_TABLE["Journey"].defaults


def test_a_field_the_manifest_no_longer_sets_is_a_change_at_any_depth() -> None:
    stored = {"display_name": "J", "goal": {"event_name": "bought"},
              "event_trigger": {"event_name": "signed_up", "filter": "event.pro"}}
    desired = {"display_name": "J", "event_trigger": {"event_name": "signed_up"}}
    before, paths = compare(stored, desired, JOURNEY_DEFAULTS)
    assert paths == ["event_trigger", "goal"]
    assert before["event_trigger"] == {"event_name": "signed_up", "filter": "event.pro"}


def test_defaults_the_server_fills_in_are_no_change_but_other_values_are() -> None:
    node = {"id": "send", "send": {"content_key": "c", "next_node_id": "done"}}
    desired = {"display_name": "J", "nodes": [node]}
    stored = {"display_name": "J", "re_entry": "RE_ENTRY_POLICY_NEVER",
              "nodes": [{"id": "send", "send": {**node["send"],
                                                "on_failure": "FAILURE_POLICY_EXIT"}}]}
    assert compare(stored, desired, JOURNEY_DEFAULTS)[1] == []
    stored["re_entry"] = "RE_ENTRY_POLICY_AFTER_COOLDOWN"
    stored["nodes"][0]["send"]["on_failure"] = "FAILURE_POLICY_CONTINUE"
    assert compare(stored, desired, JOURNEY_DEFAULTS)[1] == ["nodes", "re_entry"]


def test_a_default_the_manifest_spells_out_is_no_change_where_the_server_leaves_it_out() -> None:
    # The server does not keep a zero re-entry cooldown: `0s` in a manifest was a change (and
    # a new version) on every apply.
    desired = {"display_name": "J", "re_entry_cooldown": "0s",
               "nodes": [{"id": "send", "send": {"content_key": "c",
                                                 "on_failure": "FAILURE_POLICY_EXIT"}}]}
    stored = {"display_name": "J", "nodes": [{"id": "send", "send": {"content_key": "c"}}]}
    assert compare(stored, desired, JOURNEY_DEFAULTS)[1] == []
    desired["re_entry_cooldown"] = "60s"
    assert compare(stored, desired, JOURNEY_DEFAULTS)[1] == ["re_entry_cooldown"]
