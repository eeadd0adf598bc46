"""Signed-in sessions sealed into the browser's cookie, so any console replica (and a restarted
one) reads them without shared state and without sticky routing.

The cookie is the session, encrypted and authenticated (Fernet: AES-128-CBC + HMAC-SHA256)
under a secret the replicas share: the browser, and a script on any page, can neither read the
API key in it nor forge or alter a session. A cookie that fails to open (tampered, sealed under
an unknown secret, not a token at all) or that is past its expiry or its idle timeout is no
session. Rotation: seal under the newest secret, open under any of the configured ones, so the
previous secret keeps its sessions for the window it stays configured.

What sealing cannot do is forget a cookie: with no shared state there is no revocation list. A
sign-out deletes the cookie from the browser; a copy taken before it stays openable until the
idle timeout or the absolute expiry, whichever is first, or until the API key itself is revoked
(the services refuse it and the console ends the session at its next call). Both times are
therefore kept short."""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_CHARS = 32
PAYLOAD_VERSION = 1


@dataclass(frozen=True)
class Session:
    csrf_token: str
    expires: datetime  # absolute: sign-in time + lifetime, never extended
    last_seen: datetime  # the idle timeout counts from here; each request moves it
    api_key: str = ""  # empty until signed in; only ever inside the sealed cookie
    label: str = ""  # what the header shows: a random tag, no part of the key
    # Whether the key may pause, resume and archive (a READ key may not): the page hides the
    # buttons when not. Learnt at sign-in; the services still decide each press.
    can_change: bool = True

    @property
    def signed_in(self) -> bool:
        return bool(self.api_key)

    def csrf_ok(self, submitted: str) -> bool:
        return hmac.compare_digest(self.csrf_token.encode(), submitted.encode())


def _fernet_key(secret: str) -> bytes:
    # Any long random string is a secret (a Kubernetes Secret holds text); HKDF turns it into
    # the 32 bytes Fernet wants, under a label of its own.
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=b"cjo-console-session-v1").derive(secret.encode())
    return base64.urlsafe_b64encode(derived)


@dataclass
class SessionSealer:
    """Seals sessions under ``secrets[0]`` and opens those sealed under any of ``secrets``."""

    secrets: Sequence[str]
    lifetime: timedelta
    idle_timeout: timedelta
    _box: MultiFernet = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("a session secret is needed")
        if any(len(s) < MIN_SECRET_CHARS for s in self.secrets):
            raise ValueError(f"session secrets must be at least {MIN_SECRET_CHARS} characters")
        self._box = MultiFernet([Fernet(_fernet_key(s)) for s in self.secrets])

    def new(self, now: datetime) -> Session:
        """A signed-out session: only a CSRF token, for the sign-in form."""
        return Session(secrets.token_urlsafe(32), now + self.lifetime, now)

    def sign_in(self, api_key: str, label: str, now: datetime,
                can_change: bool = True) -> Session:
        """A fresh CSRF token and expiry on sign-in, so nothing planted before it (session
        fixation) is worth anything after."""
        return Session(secrets.token_urlsafe(32), now + self.lifetime, now, api_key, label,
                       can_change)

    def touch(self, session: Session, now: datetime) -> Session:
        return replace(session, last_seen=now)

    def seal(self, session: Session) -> str:
        payload = {"v": PAYLOAD_VERSION, "csrf": session.csrf_token, "key": session.api_key,
                   "label": session.label, "exp": session.expires.timestamp(),
                   "seen": session.last_seen.timestamp(), "chg": session.can_change}
        return self._box.encrypt(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def open(self, cookie: str | None, now: datetime) -> Session | None:
        """The session in ``cookie``, or None when it is missing, altered, sealed under no
        configured secret, expired or idle too long."""
        if not cookie:
            return None
        try:
            payload = json.loads(self._box.decrypt(cookie.encode()))
            if payload.get("v") != PAYLOAD_VERSION:
                return None
            session = Session(
                csrf_token=str(payload["csrf"]),
                expires=datetime.fromtimestamp(float(payload["exp"]), UTC),
                last_seen=datetime.fromtimestamp(float(payload["seen"]), UTC),
                api_key=str(payload["key"]), label=str(payload["label"]),
                can_change=bool(payload.get("chg", True)))
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        if session.expires <= now or session.last_seen + self.idle_timeout <= now:
            return None
        return session
