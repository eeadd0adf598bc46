"""Configuration from environment variables, validated once at start-up.

Every problem is collected and reported together, naming the variable, so a misconfigured pod
fails with one clear message instead of a stack trace later.
"""

from __future__ import annotations

import builtins
import difflib
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cjo_platform.rpc.auth import KEY_CACHE_SECONDS

# Default listen ports; also what clients dial when no CJO_<SVC>_TARGET is set.
DEFAULT_PORTS: dict[str, int] = {
    "identity": 50051,
    "content": 50052,
    "orchestration": 50053,
    "delivery": 50054,
    "analytics": 50055,
    "decisioning": 50056,
}

# Processes that speak HTTP, not gRPC (no grpc.health.v1 to wait on): the web console.
HTTP_PORTS: dict[str, int] = {
    "console": 8088,
}

# Where each process serves /metrics for Prometheus unless CJO_METRICS_PORT says otherwise
# (one service per pod, so one port for all; `make run` gives each its own).
DEFAULT_METRICS_PORT = 9464
# CJO_FACTS_LINGER_MS: see ServiceSettings.facts_linger_seconds and docs/capacity-journal.md.
DEFAULT_FACTS_LINGER_MS = 50
MAX_FACTS_LINGER_MS = 5000

MIN_SERVICE_TOKEN_LENGTH = 24

# CJO_ENV: what kind of deployment this is. Only "test" unlocks test-only settings.
ENVIRONMENTS = ("development", "test", "production")


# The variables Kubernetes sets for a Service (its "service links"), after CJO_<SERVICE>_.
_SERVICE_LINK = re.compile(r"^(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT_\d+_(TCP|UDP|SCTP)(_\w+)?)$")


def warn_unused(service: builtins.str,
                unused: Iterable[tuple[builtins.str, builtins.str | None]], log: Any) -> None:
    """Log each variable of :meth:`Env.unused` once, at start: a misspelt setting (say
    ..._REQUEST_LOGS_DAYS for ..._REQUEST_LOG_DAYS) would otherwise leave its default in
    force without a word."""
    for name, near in unused:
        log.warning("a setting of this service is set but not used: misspelt, or from "
                    "another version?", service=service, setting=name, did_you_mean=near)


class ConfigError(Exception):
    """Raised with every configuration problem found, one per line."""


class Env:
    """Reads typed values from an environment mapping, collecting errors instead of raising."""

    def __init__(self, environ: Mapping[builtins.str, builtins.str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.errors: list[builtins.str] = []
        # Every name asked for, set or not: what is set and never asked for is unused
        # (:meth:`unused`), most often a misspelt setting.
        self.asked: set[builtins.str] = set()

    def raw(self, name: builtins.str) -> builtins.str:
        """The variable as set, stripped ("" when unset); for settings parsed by the caller."""
        self.asked.add(name)
        return self.environ.get(name, "").strip()

    def unused(self, service: builtins.str) -> list[tuple[builtins.str, builtins.str | None]]:
        """The variables named for ``service`` (CJO_<SERVICE>_...) that are set but that it
        never asked for, each with the asked-for name it most resembles (None: none close).
        Kubernetes' service links (a Service named cjo-<service> sets CJO_<SERVICE>_SERVICE_HOST,
        CJO_<SERVICE>_PORT_50051_TCP and kin in every pod) are not settings and are left out."""
        prefix = f"CJO_{service.upper()}_"
        known = sorted(n for n in self.asked if n.startswith(prefix))
        return [(name, next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)),
                            None))
                for name in sorted(self.environ)
                if name.startswith(prefix) and name not in self.asked
                and not _SERVICE_LINK.search(name[len(prefix):])]

    def str(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str:
        value = self.raw(name)
        if value:
            return value
        if default is None:
            self.errors.append(f"{name} is required")
            return ""
        return default

    def int(self, name: builtins.str, default: int, *, minimum: int = 0,
            maximum: int = 2**31) -> int:
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.errors.append(f"{name}={raw!r} is not an integer")
            return default
        if not minimum <= value <= maximum:
            self.errors.append(f"{name}={value} is outside {minimum}..{maximum}")
        return value

    def float(self, name: builtins.str, default: float, *, minimum: float = 0.0,
              maximum: float = float("inf")) -> float:
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if math.isnan(value):  # "nan" parses, and passes every bound
            self.errors.append(f"{name}={raw!r} is not a number")
            return default
        if value < minimum:
            self.errors.append(f"{name}={value} is below {minimum}")
        elif value > maximum:
            self.errors.append(f"{name}={value} is above {maximum}")
        return value

    def bool(self, name: builtins.str, default: bool) -> bool:
        raw = self.raw(name).lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self.errors.append(f"{name}={raw!r} is not a boolean (true/false)")
        return default

    def choice(self, name: builtins.str, default: builtins.str,
               choices: tuple[builtins.str, ...]) -> builtins.str:
        value = self.str(name, default).lower()
        if value not in choices:
            self.errors.append(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def check(self) -> None:
        if self.errors:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True)
class ServiceSettings:
    """What every service needs. Service-specific settings extend this by composition."""

    service: str
    host: str
    port: int
    database_url: str
    database_schema: str
    auto_migrate: bool
    service_token: str
    peers: Mapping[str, str]  # service name -> gRPC target
    log_format: str  # json | console | auto
    log_level: str
    shutdown_grace_seconds: float
    data_dir: Path
    # What kind of deployment this is (CJO_ENV): development, test or production.
    environment: str = "development"
    # How long a verified API key is trusted without asking identity again
    # (CJO_API_KEY_CACHE_SECONDS): the bound on how late a deleted key is refused.
    api_key_cache_seconds: float = KEY_CACHE_SECONDS
    # For end-to-end tests only (CJO_TEST_CLOCK_FILE, accepted with CJO_ENV=test): the file
    # whose offset every process adds to the wall clock (cjo_platform.clock.FileOffsetClock).
    test_clock_file: Path | None = None
    # Where Prometheus scrapes this process's /metrics (CJO_METRICS_PORT); 0: no metrics.
    metrics_port: int = 0
    # A successful RPC is logged (at info) only when it took at least this long
    # (CJO_LOG_SLOW_RPC_MS); every one at CJO_LOG_LEVEL=debug. Failures are always logged.
    log_slow_rpc_ms: float = 1000.0
    # How long the forwarders of facts (to analytics and decisioning), which nobody waits on,
    # gather the rows of several units of work into one call (CJO_FACTS_LINGER_MS).
    facts_linger_seconds: float = DEFAULT_FACTS_LINGER_MS / 1000

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def peer(self, service: str) -> str:
        return self.peers[service]


# An unquoted PostgreSQL name, short enough for "<prefix>orchestration" to fit the 63 bytes of
# an identifier: the schema reaches the server unquoted in the connection's search_path, which
# folds it to lower case (a "Cjo_" schema created quoted was then never found) and takes no
# space (the connection was refused).
_SCHEMA_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,49}")


def _schema_prefix(env: Env) -> str:
    prefix = env.str("CJO_DATABASE_SCHEMA_PREFIX", "cjo_")
    if not _SCHEMA_PREFIX.fullmatch(prefix):
        env.errors.append(
            "CJO_DATABASE_SCHEMA_PREFIX must be lower-case letters, digits and underscores, a "
            f"letter or underscore first, at most 50 characters; got {prefix!r}")
    return prefix


def load_service_settings(service: str, env: Env) -> ServiceSettings:
    """Read the common settings of ``service``; call ``env.check()`` after adding your own."""
    upper = service.upper()
    data_dir = Path(env.str("CJO_DATA_DIR", ".cjo/data"))
    default_url = f"sqlite:///{data_dir / (service + '.db')}"
    database_url = env.str(f"CJO_{upper}_DATABASE_URL", env.str("CJO_DATABASE_URL", default_url))
    if not database_url.startswith(("sqlite", "postgresql")):
        env.errors.append(
            f"CJO_{upper}_DATABASE_URL / CJO_DATABASE_URL must be a sqlite:// or "
            f"postgresql+psycopg:// URL, got {database_url.split(':', 1)[0]!r}"
        )
    token = env.str("CJO_SERVICE_TOKEN")
    if token and len(token) < MIN_SERVICE_TOKEN_LENGTH:
        env.errors.append(
            f"CJO_SERVICE_TOKEN must be at least {MIN_SERVICE_TOKEN_LENGTH} characters")
    peers = {name: _peer_target(env, name, port) for name, port in DEFAULT_PORTS.items()}
    environment = env.choice("CJO_ENV", "development", ENVIRONMENTS)
    return ServiceSettings(
        service=service,
        host=env.str("CJO_HOST", "127.0.0.1"),
        port=env.int(f"CJO_{upper}_PORT", DEFAULT_PORTS[service], minimum=0, maximum=65535),
        database_url=database_url,
        database_schema=_schema_prefix(env) + service,
        auto_migrate=env.bool("CJO_AUTO_MIGRATE", True),
        service_token=token,
        peers=peers,
        log_format=env.choice("CJO_LOG_FORMAT", "auto", ("auto", "json", "console")),
        log_level=env.choice("CJO_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        shutdown_grace_seconds=env.float("CJO_SHUTDOWN_GRACE_SECONDS", 10.0),
        data_dir=data_dir,
        environment=environment,
        test_clock_file=_test_clock_file(env, environment),
        api_key_cache_seconds=_api_key_cache_seconds(env),
        metrics_port=env.int("CJO_METRICS_PORT", DEFAULT_METRICS_PORT, minimum=0,
                             maximum=65535),
        log_slow_rpc_ms=env.float("CJO_LOG_SLOW_RPC_MS", 1000.0),
        facts_linger_seconds=env.int("CJO_FACTS_LINGER_MS", DEFAULT_FACTS_LINGER_MS, minimum=0,
                                     maximum=MAX_FACTS_LINGER_MS) / 1000,
    )


MAX_API_KEY_CACHE_SECONDS = 300.0


def _api_key_cache_seconds(env: Env) -> float:
    seconds = env.float("CJO_API_KEY_CACHE_SECONDS", KEY_CACHE_SECONDS)
    if seconds > MAX_API_KEY_CACHE_SECONDS:
        env.errors.append(f"CJO_API_KEY_CACHE_SECONDS={seconds} is above "
                          f"{MAX_API_KEY_CACHE_SECONDS:.0f}: a deleted key must stop working "
                          f"within minutes")
    return seconds


def _test_clock_file(env: Env, environment: str) -> Path | None:
    """CJO_TEST_CLOCK_FILE moves time for every service at once; it is accepted only with an
    explicit CJO_ENV=test, so a stray variable can never skew a real deployment's clock."""
    raw = env.str("CJO_TEST_CLOCK_FILE", "")
    if not raw:
        return None
    if environment != "test":
        env.errors.append(f"CJO_TEST_CLOCK_FILE is for tests only and needs CJO_ENV=test "
                          f"(CJO_ENV is {environment!r})")
        return None
    return Path(raw)


def _peer_target(env: Env, name: str, default_port: int) -> str:
    """Where to dial ``name``: CJO_<NAME>_TARGET, else its local port. The port variable is
    read only without a target, since Kubernetes service links can set it to a URL."""
    target = env.raw(f"CJO_{name.upper()}_TARGET")
    if target:
        return target
    port = env.int(f"CJO_{name.upper()}_PORT", default_port, minimum=0, maximum=65535)
    return f"127.0.0.1:{port}"
