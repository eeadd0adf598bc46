"""The console's settings, from the environment, checked at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta

from cjo_client import Endpoints
from cjo_console.domain.sessions import MIN_SECRET_CHARS
from cjo_platform.config import DEFAULT_PORTS, HTTP_PORTS, Env
from cjo_platform.event_loop import DEFAULT_EVENT_LOOP, event_loop_setting


@dataclass(frozen=True)
class ConsoleSettings:
    host: str
    port: int
    endpoints: Endpoints
    # The secrets sessions are sealed under: the first seals, every one opens (rotation).
    session_secrets: tuple[str, ...]
    session_lifetime: timedelta
    session_idle_timeout: timedelta
    # Secure cookies need HTTPS: true behind an Ingress with TLS; `make run` serves plain HTTP.
    secure_cookies: bool
    refresh_seconds: float  # how often a journey's graph asks for fresh counts
    # How long one fetch of a journey's counts (a funnel query in analytics) serves every tab
    # of the same key on this replica.
    counts_cache_seconds: float
    # TLS to the services' gRPC ports (the API key travels there), verified against the
    # system's roots or the PEM file ca_file (a private CA; implies TLS).
    tls: bool
    ca_file: str
    log_format: str
    log_level: str
    # The loop uvicorn serves on (CJO_EVENT_LOOP, as every cjo process): uvicorn would pick
    # uvloop on its own whenever it is installed.
    event_loop: str = DEFAULT_EVENT_LOOP
    # CJO_CONSOLE_ variables set but never read (Env.unused): logged at start.
    unused: tuple[tuple[str, str | None], ...] = ()


def load(environ: Mapping[str, str] | None = None) -> ConsoleSettings:
    env = Env(environ)

    def target(name: str) -> str:
        explicit = env.raw(f"CJO_{name.upper()}_TARGET")
        if explicit:
            return explicit
        port = env.int(f"CJO_{name.upper()}_PORT", DEFAULT_PORTS[name], minimum=1,
                       maximum=65535)
        return f"127.0.0.1:{port}"

    secret = env.raw("CJO_CONSOLE_SECRET")
    if not secret:
        env.errors.append("CJO_CONSOLE_SECRET is required: the secret every console replica "
                          "seals sessions under (`make run` generates one; in Kubernetes it "
                          "is key console-secret of the Secret cjo-secrets)")
    previous = tuple(s.strip() for s in env.raw("CJO_CONSOLE_PREVIOUS_SECRETS").split(",")
                     if s.strip())
    for name, value in (("CJO_CONSOLE_SECRET", secret),
                        *(("CJO_CONSOLE_PREVIOUS_SECRETS", p) for p in previous)):
        if value and len(value) < MIN_SECRET_CHARS:
            env.errors.append(f"{name}: each secret needs at least {MIN_SECRET_CHARS} "
                              "characters (e.g. `openssl rand -base64 32`)")
    settings = ConsoleSettings(
        host=env.str("CJO_HOST", "127.0.0.1"),
        port=env.int("CJO_CONSOLE_PORT", HTTP_PORTS["console"], minimum=0, maximum=65535),
        endpoints=Endpoints({name: target(name) for name in DEFAULT_PORTS}),
        session_secrets=(secret, *previous),
        session_lifetime=timedelta(hours=env.float("CJO_CONSOLE_SESSION_HOURS", 8.0,
                                                   minimum=0.01)),
        session_idle_timeout=timedelta(minutes=env.float("CJO_CONSOLE_IDLE_MINUTES", 30.0,
                                                         minimum=0.01)),
        secure_cookies=env.bool("CJO_CONSOLE_SECURE_COOKIES", False),
        refresh_seconds=env.float("CJO_CONSOLE_REFRESH_SECONDS", 3.0, minimum=0.5),
        counts_cache_seconds=env.float("CJO_CONSOLE_COUNTS_CACHE_SECONDS", 2.0, minimum=0.0),
        tls=env.bool("CJO_CONSOLE_TLS", False),
        ca_file=env.str("CJO_CONSOLE_CA_FILE", ""),
        log_format=env.choice("CJO_LOG_FORMAT", "auto", ("auto", "json", "console")),
        log_level=env.choice("CJO_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        event_loop=event_loop_setting(env),
    )
    env.check()
    return replace(settings, unused=tuple(env.unused("console")))
