"""Who is calling: a workspace's API key, or another cjo service holding the service token.

Applications send ``authorization: Bearer <api key>``. cjo services calling each other send the
deployment's service token plus ``x-cjo-workspace``: they act on behalf of the workspace whose
work they are doing, and can reach nothing else. A key may call only what its scope allows
(:mod:`cjo_platform.rpc.scopes`); the service token is not a key and is not scoped.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from cjo_platform.errors import PermissionDenied, Unauthenticated
from cjo_platform.rpc.scopes import Scope, allows, required_scope

WORKSPACE_HEADER = "x-cjo-workspace"
KEY_PREFIX = "cjo"


@dataclass(frozen=True)
class Principal:
    workspace_id: str  # "" only for a service call that names no workspace
    key_id: str
    is_service: bool
    scope: Scope = Scope.ADMIN  # what a key may call; the service token may call everything
    # When the presented secret stops working (a secret replaced by a rotation): no cache
    # trusts the principal past it. None: until the key is revoked.
    expire_time: datetime | None = None


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "cjo_principal", default=None)


_method: contextvars.ContextVar[str] = contextvars.ContextVar("cjo_method", default="")


def current_method() -> str:
    """The full gRPC method of the current request (``/cjo.x.v1.XService/Method``)."""
    method = _method.get()
    if not method:
        raise Unauthenticated("no authenticated call")
    return method


def current_principal() -> Principal:
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("no authenticated caller")
    return principal


def current_workspace() -> str:
    """The workspace the current request acts on behalf of."""
    principal = current_principal()
    if not principal.workspace_id:
        raise PermissionDenied(f"service calls must name a workspace in {WORKSPACE_HEADER}",
                               reason="WORKSPACE_REQUIRED")
    return principal.workspace_id


def authorize(principal: Principal, method: str) -> None:
    """Refuses a key whose scope does not cover ``method`` (the service token passes)."""
    if principal.is_service:
        return
    needed = required_scope(method)
    if not allows(principal.scope, needed):
        raise PermissionDenied(
            f"this API key's scope is {principal.scope.label}; {method} needs {needed.label}",
            reason="SCOPE_REQUIRED",
            metadata={"scope": needed.label, "key_scope": principal.scope.label,
                      "method": method})


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _principal.set(principal)


def set_method(method: str) -> None:
    _method.set(method)


@contextlib.contextmanager
def acting_for(workspace_id: str, method: str) -> Iterator[None]:
    """Run a servicer's method in-process as the service acting for ``workspace_id`` (what a
    peer's call with the service token sets up): the event bus's consumers call the very
    method a forwarder calls over gRPC."""
    principal = _principal.set(Principal(workspace_id, "event-bus", is_service=True))
    name = _method.set(method)
    try:
        yield
    finally:
        _method.reset(name)
        _principal.reset(principal)


# --- API keys -------------------------------------------------------------------------------


def new_api_key() -> tuple[str, str, str]:
    """A fresh key: (key_id, secret, secret_hash). Only the hash is ever stored."""
    key_id = secrets.token_hex(6)
    secret, secret_hash = new_secret(key_id)
    return key_id, secret, secret_hash


def new_secret(key_id: str) -> tuple[str, str]:
    """A fresh secret for the key ``key_id`` (e.g. a rotation): (secret, secret_hash)."""
    secret = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return secret, hash_secret(secret)


def hash_secret(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1]:
        return None
    return parts[1]


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


KeyResolver = Callable[[str], Awaitable[Principal | None]]

KEY_CACHE_SECONDS = 30.0
"""How long a replica trusts a key it verified (``CJO_API_KEY_CACHE_SECONDS``): a deleted API
key stops working on every replica of every service within this time."""

NEGATIVE_KEY_CACHE_SECONDS = 5.0
"""How long a replica remembers that a secret is not a key (a key is never cached as unknown
before it exists: its secret is random and first shown by the call that created it)."""


class CachingResolver:
    """Caches a slower resolver (e.g. a call to identity) by secret hash: valid keys for
    ``ttl`` seconds, unknown keys for ``negative_ttl`` seconds (never longer than ``ttl``).

    ``ttl`` is the bound on revocation: a key revoked or deleted in identity is refused by every
    replica at most ``ttl`` seconds later, when the replica's entry runs out and it asks again
    (the replica that revoked the key forgets it at once). A secret that expires (rotated out)
    is never trusted past its ``expire_time`` by ``now``. ``clock`` gives monotonic seconds,
    ``now`` the wall time expiries are compared with (the service's clock)."""

    def __init__(self, resolve: KeyResolver, *, ttl: float = KEY_CACHE_SECONDS,
                 negative_ttl: float = NEGATIVE_KEY_CACHE_SECONDS, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._resolve = resolve
        self._ttl = ttl
        self._negative_ttl = min(negative_ttl, ttl)
        self._max = max_entries
        self._clock = clock
        self._now = now
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    @property
    def ttl(self) -> float:
        return self._ttl

    def trusted_for(self, principal: Principal) -> float:
        """Seconds from now until ``principal`` must be resolved again: the cache's ``ttl``,
        or less when its secret expires sooner."""
        seconds = self._ttl if self._ttl > 0 else KEY_CACHE_SECONDS
        if principal.expire_time is not None:
            seconds = min(seconds, (principal.expire_time - self._now()).total_seconds())
        return max(seconds, 0.0)

    async def __call__(self, secret: str) -> Principal | None:
        digest = hash_secret(secret)
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > self._clock() and not self._expired(hit[1]):
            return hit[1]
        # The entry's time starts before asking: the answer is never trusted for longer than
        # ``ttl`` after the moment it could have been true.
        asked = self._clock()
        principal = await self._resolve(secret)
        if len(self._cache) >= self._max:
            self._cache.clear()
        if self._ttl > 0:
            self._cache[digest] = (asked + (self._ttl if principal else self._negative_ttl),
                                   principal)
        return principal

    def _expired(self, principal: Principal | None) -> bool:
        # Checked on every hit, so a rotated-out secret ends on time although its entry's
        # ``ttl`` is counted on another clock.
        return (principal is not None and principal.expire_time is not None
                and principal.expire_time <= self._now())

    def forget_key(self, key_id: str) -> None:
        """Drop a revoked, rotated or deleted key at once (in this process; other replicas
        within ``ttl``)."""
        for digest, (_, principal) in list(self._cache.items()):
            if principal is not None and principal.key_id == key_id:
                del self._cache[digest]


class Authenticator:
    """Turns request metadata into a :class:`Principal`, or raises."""

    def __init__(self, service_token: str, resolve_key: KeyResolver) -> None:
        self._service_token = service_token
        self._resolve_key = resolve_key

    async def authenticate(self, metadata: dict[str, str]) -> Principal:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing 'authorization: Bearer <api key>' metadata",
                                  reason="API_KEY_MISSING")
        token = token.strip()
        if same_secret(token, self._service_token):
            return Principal(workspace_id=metadata.get(WORKSPACE_HEADER, ""), key_id="",
                             is_service=True)
        principal = await self._resolve_key(token) if key_id_of(token) else None
        if principal is None:
            raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")
        return principal

    def recheck_after(self, principal: Principal) -> float | None:
        """Seconds after which a long call (a server stream) made as ``principal`` must
        authenticate again, so a revoked key or a rotated-out secret ends it as it would end
        the next unary call; None for the service token, which is not revoked."""
        if principal.is_service:
            return None
        trusted_for = getattr(self._resolve_key, "trusted_for", None)
        return trusted_for(principal) if trusted_for is not None else KEY_CACHE_SECONDS
