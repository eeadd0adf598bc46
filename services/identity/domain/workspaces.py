"""Workspaces (tenants) and their API keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cjo_platform.errors import FailedPrecondition, Violations
from cjo_platform.rpc.auth import KEY_PREFIX
from cjo_platform.rpc.scopes import Scope

WORKSPACE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MAX_DISPLAY_NAME_LENGTH = 200
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)
MAX_ROTATION_OVERLAP = timedelta(days=30)
# Characters of the random part a secret hint shows: 24 of its 256 bits, enough to tell two
# secrets of one key apart, far too few to guess the rest.
HINT_CHARACTERS = 4
# A key's last use is written at most once a minute: authentications stay reads.
LAST_USE_GRANULARITY = timedelta(minutes=1)


@dataclass(frozen=True)
class Workspace:
    workspace_id: str
    display_name: str
    create_time: datetime


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: only the hash of its secret is ever kept."""

    key_id: str
    workspace_id: str
    display_name: str
    secret_hash: str
    create_time: datetime
    scope: Scope = Scope.ADMIN
    secret_hint: str = ""
    previous_secret_hash: str | None = None
    previous_secret_expire_time: datetime | None = None
    revoke_time: datetime | None = None
    last_use_time: datetime | None = None

    def hint(self) -> str:
        """The stored hint, or (for a key from before hints) the part every secret of the key
        shares."""
        return self.secret_hint or f"{KEY_PREFIX}_{self.key_id}_…"

    def previous_secret_works(self, now: datetime) -> bool:
        return (self.previous_secret_hash is not None
                and self.previous_secret_expire_time is not None
                and now < self.previous_secret_expire_time)

    def rotated(self, secret_hash: str, secret_hint: str, now: datetime,
                overlap: timedelta) -> ApiKey:
        """The key with a new secret; the current one works ``overlap`` longer. A previous
        secret still in its window is dropped: one key never has three secrets."""
        if self.revoke_time is not None:
            raise FailedPrecondition(f"API key {self.key_id!r} is revoked",
                                     reason="API_KEY_REVOKED")
        return replace(self, secret_hash=secret_hash, secret_hint=secret_hint,
                       previous_secret_hash=self.secret_hash if overlap else None,
                       previous_secret_expire_time=now + overlap if overlap else None)


def secret_hint(secret: str) -> str:
    """``cjo_<key id>_`` and the first characters of the random part."""
    # The random part may itself hold "_" (URL-safe base64): split off the first two only.
    prefix, key_id, random_part = secret.split("_", 2)
    return f"{prefix}_{key_id}_{random_part[:HINT_CHARACTERS]}…"


def check_rotation_overlap(overlap: timedelta) -> None:
    problems = Violations()
    problems.check(timedelta(0) <= overlap <= MAX_ROTATION_OVERLAP, "overlap",
                   f"must be between 0 and {MAX_ROTATION_OVERLAP.days} days")
    problems.raise_if_any()


def check_new_workspace(workspace_id: str, display_name: str) -> None:
    problems = Violations()
    problems.check(bool(WORKSPACE_ID.fullmatch(workspace_id)), "workspace_id",
                   "must be 3 to 63 lower-case letters, digits or dashes, "
                   "starting and ending with a letter or digit")
    _check_display_name(problems, display_name)
    problems.raise_if_any()


def check_new_api_key(display_name: str) -> None:
    problems = Violations()
    _check_display_name(problems, display_name)
    problems.raise_if_any()


def scope_of(value: int, field: str = "scope") -> Scope:
    """The scope a request names (unset: ADMIN, as every key had before scopes)."""
    problems = Violations()
    known = value in {s.value for s in Scope} or value == 0
    problems.check(known, field, "must be an ApiKeyScope value")
    problems.raise_if_any()
    return Scope.of(value)


def _check_display_name(problems: Violations, display_name: str) -> None:
    problems.check(len(display_name) <= MAX_DISPLAY_NAME_LENGTH, "display_name",
                   f"at most {MAX_DISPLAY_NAME_LENGTH} characters")
