"""Contexts, as kubectl has them: named sets of endpoints and an API key, one of them current,
kept in $XDG_CONFIG_HOME/cjo/config.yaml. The key is stored in a file only its owner can read
(0600), or not at all when the context names an environment variable to read it from."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cjo_client import SERVICES, Client, Endpoints, is_loopback

KEY_ENV = "CJO_API_KEY"


class ConfigError(Exception):
    """A context problem, said so a person can act on it."""


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cjo" / "config.yaml"


@dataclass
class Context:
    name: str
    endpoints: dict[str, str] = field(default_factory=dict)
    api_key: str = ""  # stored key (the file is 0600); empty when read from api_key_env
    api_key_env: str = ""  # the environment variable holding the key instead
    # TLS: None (not said) means on when any endpoint is off this machine. A CA file verifies
    # the services' certificates against a private CA (implies TLS).
    tls: bool | None = None
    ca_file: str = ""
    # Plaintext to a host off this machine is refused (the API key would cross the network in
    # the clear) unless the context says so.
    insecure: bool = False

    def secure(self) -> bool:
        """Whether this context dials TLS; refuses plaintext to a remote host unless
        ``insecure``."""
        remote = sorted(t for t in Endpoints(self.endpoints).targets.values()
                        if not is_loopback(t))
        if self.ca_file or self.tls:
            return True
        if self.tls is None and remote:
            return True
        if remote and not self.insecure:
            raise ConfigError(f"context {self.name!r} would send its API key in plaintext to "
                              f"{', '.join(remote)}: use --tls (and --ca-file for a private "
                              "CA), or --insecure if that network is trusted")
        return False

    def key(self) -> str:
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise ConfigError(f"context {self.name!r} reads its key from "
                                  f"${self.api_key_env}, which is not set")
            return key
        if self.api_key:
            return self.api_key
        key = os.environ.get(KEY_ENV, "")
        if not key:
            raise ConfigError(f"context {self.name!r} has no API key: `cjo context add "
                              f"{self.name} --api-key-env VAR` or set ${KEY_ENV}")
        return key

    def client(self) -> Client:
        return Client(Endpoints(self.endpoints), self.key(), secure=self.secure(),
                      ca_file=self.ca_file)


@dataclass
class Config:
    contexts: dict[str, Context] = field(default_factory=dict)
    current: str = ""

    @classmethod
    def load(cls) -> Config:
        path = config_path()
        if not path.exists():
            return cls()
        data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        contexts = {name: Context(name, dict(c.get("endpoints") or {}), c.get("api_key", ""),
                                  c.get("api_key_env", ""), c.get("tls"), c.get("ca_file", ""),
                                  bool(c.get("insecure", False)))
                    for name, c in (data.get("contexts") or {}).items()}
        return cls(contexts, data.get("current_context", ""))

    def save(self) -> None:
        path = config_path()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"current_context": self.current, "contexts": {
            c.name: {k: v for k, v in (("endpoints", c.endpoints), ("api_key", c.api_key),
                                       ("api_key_env", c.api_key_env), ("tls", c.tls),
                                       ("ca_file", c.ca_file), ("insecure", c.insecure))
                     if v or (k == "tls" and v is False)}
            for c in self.contexts.values()}}
        # Created 0600 before the key is written, never readable by others for a moment.
        fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, sort_keys=False)
        os.chmod(path.with_suffix(".tmp"), 0o600)
        os.replace(path.with_suffix(".tmp"), path)

    def context(self, name: str | None = None) -> Context:
        """The named context, else the current one, else one from the environment alone
        (CJO_<SERVICE>_TARGET and CJO_API_KEY), so scripts and CI need no config file."""
        wanted = name or os.environ.get("CJO_CONTEXT") or self.current
        if wanted:
            if wanted not in self.contexts:
                raise ConfigError(f"no context {wanted!r}; `cjo context list` shows them")
            return self.contexts[wanted]
        env = os.environ
        tls = env.get("CJO_TLS", "").strip().lower()
        return Context("(environment)", dict(Endpoints.from_env().targets),
                       tls={"true": True, "1": True, "false": False, "0": False}.get(tls),
                       ca_file=env.get("CJO_CA_FILE", "").strip(),
                       insecure=env.get("CJO_INSECURE", "").strip().lower() in ("true", "1"))


def parse_endpoints(host: str | None, pairs: list[str]) -> dict[str, str]:
    """``--host H`` gives every service H on its default port; ``--endpoint svc=host:port``
    overrides one."""
    endpoints = {s: f"{host}:{port}" for s, port in SERVICES.items()} if host else {}
    for pair in pairs:
        service, sep, target = pair.partition("=")
        if not sep or service not in SERVICES or not target:
            raise ConfigError(f"--endpoint {pair!r}: expected SERVICE=HOST:PORT with SERVICE "
                              f"one of {', '.join(SERVICES)}")
        endpoints[service] = target
    return endpoints
