"""The console's sealed sessions: what opens, what does not, and rotation of the secret."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from cjo_console.config import load
from cjo_console.domain.sessions import SessionSealer
from cjo_platform.config import ConfigError

OLD = "old-secret-0123456789abcdefghijklmnopqrstuvwxyz"
NEW = "new-secret-0123456789abcdefghijklmnopqrstuvwxyz"
KEY = "cjo_acme_0123456789abcdef0123456789"
T0 = datetime(2026, 3, 29, 9, 0, tzinfo=UTC)


def sealer(*secrets: str) -> SessionSealer:
    return SessionSealer(secrets or (NEW,), timedelta(hours=8), timedelta(minutes=30))


def test_a_sealed_session_opens_on_another_sealer_with_the_same_secret() -> None:
    cookie = sealer().seal(sealer().sign_in(KEY, "a1b2c3", T0))
    opened = sealer().open(cookie, T0 + timedelta(minutes=5))
    assert opened is not None and opened.signed_in
    assert (opened.api_key, opened.label) == (KEY, "a1b2c3")
    assert KEY not in cookie and KEY not in base64.urlsafe_b64decode(cookie + "==").decode(
        "latin-1")


def test_signing_in_gives_a_new_csrf_token() -> None:
    before = sealer().new(T0)
    after = sealer().sign_in(KEY, "x", T0)
    assert before.csrf_token != after.csrf_token and not before.signed_in


def test_tampered_foreign_or_garbage_cookies_are_no_session() -> None:
    cookie = sealer().seal(sealer().sign_in(KEY, "x", T0))
    flipped = cookie[:40] + ("A" if cookie[40] != "A" else "B") + cookie[41:]
    assert sealer().open(flipped, T0) is None
    assert sealer(OLD).open(cookie, T0) is None  # sealed under a secret this one lacks
    for junk in ("", "not-a-token", KEY, cookie[:-4]):
        assert sealer().open(junk, T0) is None


def test_expiry_and_idle_timeout_are_inside_the_seal() -> None:
    s = sealer()
    cookie = s.seal(s.sign_in(KEY, "x", T0))
    assert s.open(cookie, T0 + timedelta(minutes=29)) is not None
    assert s.open(cookie, T0 + timedelta(minutes=30)) is None  # idle
    # Active all day: each request reseals with a later last_seen, but never past 8 hours.
    session = s.open(cookie, T0)
    assert session is not None
    t = T0
    while t < T0 + timedelta(hours=8) - timedelta(minutes=20):
        t += timedelta(minutes=20)
        session = s.open(s.seal(s.touch(session, t)), t)
        assert session is not None
    assert s.open(s.seal(s.touch(session, t)), T0 + timedelta(hours=8)) is None


def test_rotation_opens_the_previous_secrets_sessions_and_seals_under_the_new() -> None:
    old_cookie = sealer(OLD).seal(sealer(OLD).sign_in(KEY, "x", T0))
    rotated = sealer(NEW, OLD)
    opened = rotated.open(old_cookie, T0)
    assert opened is not None and opened.api_key == KEY
    resealed = rotated.seal(opened)
    assert sealer(NEW).open(resealed, T0) is not None  # the old secret can now be dropped
    assert sealer(NEW).open(old_cookie, T0) is None  # ... and its cookies with it


def test_the_console_refuses_to_start_without_a_long_enough_secret() -> None:
    with pytest.raises(ConfigError, match="CJO_CONSOLE_SECRET is required"):
        load({})
    with pytest.raises(ConfigError, match="at least 32 characters"):
        load({"CJO_CONSOLE_SECRET": "short"})
    with pytest.raises(ConfigError, match="CJO_CONSOLE_PREVIOUS_SECRETS"):
        load({"CJO_CONSOLE_SECRET": NEW, "CJO_CONSOLE_PREVIOUS_SECRETS": "short"})
    settings = load({"CJO_CONSOLE_SECRET": NEW, "CJO_CONSOLE_PREVIOUS_SECRETS": f" {OLD} ,"})
    assert settings.session_secrets == (NEW, OLD)
