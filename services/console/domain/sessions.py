"""Signed-in sessions, kept on the server: the browser holds only an opaque, random session id
(never the API key), and every form carries the session's CSRF token."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class Session:
    session_id: str
    csrf_token: str
    expires: datetime
    api_key: str = ""  # empty until signed in; never rendered, never put in a URL
    label: str = ""  # what the header shows: the key's prefix-free id, not the key

    @property
    def signed_in(self) -> bool:
        return bool(self.api_key)

    def csrf_ok(self, submitted: str) -> bool:
        return hmac.compare_digest(self.csrf_token.encode(), submitted.encode())


@dataclass
class SessionStore:
    """In memory: a console replica's sessions die with it (people sign in again). Several
    replicas need sticky sessions at the Service (sessionAffinity: ClientIP)."""

    lifetime: timedelta
    sessions: dict[str, Session] = field(default_factory=dict)

    def new(self, now: datetime) -> Session:
        self._expire(now)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                          now + self.lifetime)
        self.sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None, now: datetime) -> Session | None:
        if not session_id:
            return None
        session = self.sessions.get(session_id)
        if session is None or session.expires <= now:
            self.sessions.pop(session_id or "", None)
            return None
        return session

    def sign_in(self, old: Session, api_key: str, label: str, now: datetime) -> Session:
        """A new id and CSRF token on sign-in, so an id planted before it (session fixation)
        is worth nothing after."""
        self.sessions.pop(old.session_id, None)
        session = self.new(now)
        session.api_key, session.label = api_key, label
        return session

    def end(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    def _expire(self, now: datetime) -> None:
        for sid in [sid for sid, s in self.sessions.items() if s.expires <= now]:
            del self.sessions[sid]
