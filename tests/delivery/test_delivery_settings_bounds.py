"""Delivery's settings are checked at start-up: a value outside its bounds is refused with its
name, instead of running with it."""

from __future__ import annotations

from cjo_delivery.bootstrap import load_sender_settings
from cjo_delivery.service_layer.send_round import SenderSettings
from cjo_platform.config import Env


def test_a_record_linger_over_a_second_is_refused() -> None:
    # Sent messages wait for their record during the linger: a replica dying then leaves them
    # to be sent again, so the wait stays short.
    env = Env({"CJO_DELIVERY_RECORD_LINGER_MS": "5000"})
    load_sender_settings(env)
    assert env.errors == ["CJO_DELIVERY_RECORD_LINGER_MS=5000.0 is above 1000.0"]


def test_a_record_linger_within_bounds_is_taken() -> None:
    env = Env({"CJO_DELIVERY_RECORD_LINGER_MS": "25"})
    settings = load_sender_settings(env)
    assert env.errors == []
    assert settings.record_linger.total_seconds() == 0.025


def test_a_sent_messages_record_lingers_40_ms_by_default() -> None:
    # The outcomes of every round under way arriving within it share one transaction: at 10
    # ms a busy sender (SMTP at ~600 sends/s) recorded groups of ~8, a commit each.
    env = Env({})
    assert load_sender_settings(env).record_linger.total_seconds() == 0.040
    assert SenderSettings().record_linger == load_sender_settings(env).record_linger


def test_a_message_is_failed_after_its_lease_ran_out_three_times_by_default() -> None:
    env = Env({})
    assert load_sender_settings(env).max_lease_expiries == SenderSettings().max_lease_expiries == 3
    env = Env({"CJO_DELIVERY_MAX_LEASE_EXPIRIES": "0"})  # every message failed unsent
    load_sender_settings(env)
    assert env.errors == ["CJO_DELIVERY_MAX_LEASE_EXPIRIES=0 is outside 1..100"]
