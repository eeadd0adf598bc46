"""Providers a workspace configures per channel, tried in order of priority.

Secrets live apart from the settings: they are written, used by the sender, and never returned
or logged (``ProviderConfig.secrets`` is left out of its repr).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from urllib.parse import urlsplit

from cjo_delivery.domain.addresses import parse_mailbox
from cjo_delivery.domain.messages import Channel
from cjo_delivery.domain.provider_events import (
    WebhookFormat,
    valid_public_key,
    valid_sns_hosts,
    valid_sns_topic_arns,
)
from cjo_delivery.domain.ratelimit import (
    MAX_RATE_PER_SECOND,
    MIN_RATE_PER_SECOND,
    valid_burst,
    valid_rate,
)
from cjo_platform.errors import InvalidArgument, Violations
from cjo_platform.limits import MAX_ID_LENGTH

NAME_PREFIX = "providers/"
DEFAULT_SMTP_ID = "default-smtp"
"""The deployment's SMTP server (CJO_SMTP_*), used for email when a workspace has none."""

MAX_PROVIDERS_PER_CHANNEL = 10
MAX_SETTING_LENGTH = 2048


class ProviderKind(StrEnum):
    SMTP = "smtp"
    HTTP_JSON = "http_json"
    TWILIO_SMS = "twilio_sms"
    FCM_PUSH = "fcm_push"
    WEBHOOK = "webhook"


@dataclass(frozen=True)
class _Shape:
    channels: frozenset[Channel]
    config: frozenset[str]  # allowed keys
    required: frozenset[str]
    secrets: frozenset[str]
    urls: frozenset[str] = frozenset()


_ALL = frozenset(Channel) - {Channel.IN_APP}
# Settings every kind takes: a rate limit shared by every sender replica (see domain/ratelimit.py).
RATE_SETTINGS = frozenset({"rate_per_second", "burst"})
# Settings every kind takes: how its status webhook URL reads the provider's own reports
# (adapters/webhooks/), and the credentials that prove a report is the provider's.
WEBHOOK_SETTINGS = frozenset({"webhook_format", "webhook_public_key", "webhook_sns_hosts",
                              "webhook_sns_topic_arns", "webhook_username"})
WEBHOOK_SECRETS = frozenset({"webhook_signing_key", "webhook_password", "webhook_auth_token"})
SHAPES = {
    ProviderKind.SMTP: _Shape(frozenset({Channel.EMAIL}),
                              frozenset({"host", "port", "from", "starttls", "timeout_seconds",
                                         "data_timeout_seconds", "ca_file"}),
                              frozenset({"host", "from"}), frozenset({"username", "password"})),
    ProviderKind.HTTP_JSON: _Shape(_ALL, frozenset({"url", "timeout_seconds"}),
                                   frozenset({"url"}), frozenset({"api_key"}),
                                   frozenset({"url"})),
    ProviderKind.TWILIO_SMS: _Shape(frozenset({Channel.SMS}),
                                    frozenset({"account_sid", "from", "base_url",
                                               "timeout_seconds"}),
                                    frozenset({"account_sid", "from"}),
                                    frozenset({"auth_token"}), frozenset({"base_url"})),
    ProviderKind.FCM_PUSH: _Shape(frozenset({Channel.PUSH}),
                                  frozenset({"project_id", "base_url", "timeout_seconds"}),
                                  frozenset({"project_id"}), frozenset({"access_token"}),
                                  frozenset({"base_url"})),
    ProviderKind.WEBHOOK: _Shape(frozenset({Channel.WEBHOOK}),
                                 frozenset({"url", "timeout_seconds"}), frozenset({"url"}),
                                 frozenset({"signing_secret"}), frozenset({"url"})),
}
REQUIRED_SECRETS = {ProviderKind.TWILIO_SMS: frozenset({"auth_token"}),
                    ProviderKind.FCM_PUSH: frozenset({"access_token"}),
                    ProviderKind.WEBHOOK: frozenset({"signing_secret"})}


@dataclass(frozen=True)
class ProviderConfig:
    workspace_id: str
    provider_id: str
    channel: Channel
    kind: ProviderKind
    priority: int
    display_name: str
    config: dict[str, str]
    secrets: dict[str, str] = field(repr=False)
    disabled: bool
    etag: str
    create_time: datetime
    update_time: datetime
    # Why the stored secrets could not be read (``secrets`` is then empty): a provider in this
    # state is reported and sends nothing, while the workspace's other providers keep working.
    secrets_error: str = ""
    # Signed into the status webhook URL: a new nonce ends the old URL.
    webhook_nonce: str = ""


# IPv6 ranges that carry an IPv4 address in their last 32 bits which a gateway may reach for
# us: NAT64's well-known prefix (RFC 6052) and the deprecated IPv4-compatible addresses.
_EMBEDDING_V4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))
# Not public, but ``is_global`` (Python 3.11.7) takes them for public: NAT64's local-use prefix
# (RFC 8215), IPv4-translated addresses (SIIT, RFC 2765) and Azure's host endpoint (wire
# server: DNS, DHCP, the VM agent's metadata).
_NOT_PUBLIC: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.IPv6Network("64:ff9b:1::/48"), ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv4Network("168.63.129.16/32"))


def is_public_address(address: str) -> bool:
    """Whether delivery may send a workspace's messages to ``address`` (an IP address, as
    getaddrinfo gives it): globally routable, so neither this host, its network, a cloud's
    metadata service nor any other private, shared, reserved or multicast range. An IPv6
    address that stands for an IPv4 one (IPv4-mapped, 6to4, NAT64, IPv4-compatible) is judged
    by that one too."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: without the zone
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and any(ip in net for net in _EMBEDDING_V4):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast and not any(
        ip.version == net.version and ip in net for net in _NOT_PUBLIC)


def literal_address(host: str) -> str | None:
    """The IP address ``host`` spells, in any form a resolver takes (``[::1]``, ``127.1``,
    ``0x7f000001``, ``127.0.0.1.`` with the root's dot), else None (a name). ``localhost`` and
    the names under it spell loopback (RFC 6761: never looked up, always this host)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(host))  # the shorthands inet_aton reads
    except (OSError, UnicodeError, ValueError):
        return None


def provider_name(provider_id: str) -> str:
    return f"{NAME_PREFIX}{provider_id}"


def provider_id_of(name: str, field: str = "name") -> str:
    provider_id = name.removeprefix(NAME_PREFIX)
    if (not name.startswith(NAME_PREFIX) or not provider_id or "/" in provider_id
            or len(provider_id) > MAX_ID_LENGTH):
        raise InvalidArgument.one(field, "must be providers/{provider_id}")
    return provider_id


def validate_provider(*, channel: Channel | None, kind: ProviderKind | None,
                      display_name: str, config: dict[str, str], secrets: dict[str, str],
                      prefix: str = "provider", private_destinations: bool = False
                      ) -> Violations:
    """Every problem of a provider's settings. ``secrets`` are the ones it will have after the
    change (stored and new). Descriptions never quote a secret's value. A URL or SMTP host that
    is an IP address must be a public one unless ``private_destinations`` (the deployment's
    CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS); names are checked when they are dialled."""
    problems = Violations()
    problems.check(len(display_name) <= 256, f"{prefix}.display_name", "at most 256 characters")
    ok_channel = problems.check(channel is not None and channel is not Channel.IN_APP,
                                f"{prefix}.channel", "is required and cannot be CHANNEL_IN_APP")
    if not problems.check(kind is not None, f"{prefix}.kind", "is required"):
        return problems
    assert kind is not None
    shape = SHAPES[kind]
    if ok_channel:
        problems.check(channel in shape.channels, f"{prefix}.channel",
                       f"is not a channel a {kind.value} provider sends")
    allowed = shape.config | RATE_SETTINGS | WEBHOOK_SETTINGS
    for key, value in config.items():
        if not problems.check(key in allowed, f"{prefix}.config[{key}]",
                              f"is not a setting of a {kind.value} provider; "
                              f"use {', '.join(sorted(allowed))}"):
            continue
        problems.check(len(value) <= MAX_SETTING_LENGTH, f"{prefix}.config[{key}]",
                       f"at most {MAX_SETTING_LENGTH} characters")
        if key in shape.urls:
            url = urlsplit(value)
            if problems.check(url.scheme in ("http", "https") and bool(url.netloc),
                              f"{prefix}.config[{key}]", "must be an http(s) URL"):
                _check_destination(url.hostname or "", private_destinations,
                                   f"{prefix}.config[{key}]", problems)
        if key == "host" and kind is ProviderKind.SMTP:
            _check_destination(value, private_destinations, f"{prefix}.config[{key}]",
                               problems)
        if key in ("port",):
            problems.check(value.isdigit() and 1 <= int(value) <= 65535,
                           f"{prefix}.config[{key}]", "must be a port number")
        if key == "from" and kind is ProviderKind.SMTP:
            problems.check(valid_from(value), f"{prefix}.config[{key}]",
                           "must be one address like 'Brand <news@brand.example>'")
        if key in ("timeout_seconds", "data_timeout_seconds"):
            problems.check(_is_positive_number(value), f"{prefix}.config[{key}]",
                           "must be a number of seconds above 0, at most 300")
        if key == "rate_per_second":
            problems.check(valid_rate(value), f"{prefix}.config[{key}]",
                           "must be a number of messages per second from "
                           f"{MIN_RATE_PER_SECOND:g} to {MAX_RATE_PER_SECOND:g}")
        if key == "burst":
            problems.check(valid_burst(value), f"{prefix}.config[{key}]",
                           "must be a positive whole number of messages")
        if key == "webhook_format":
            problems.check(value in set(WebhookFormat), f"{prefix}.config[{key}]",
                           f"must be one of {', '.join(f.value for f in WebhookFormat)}")
        if key == "webhook_public_key":
            problems.check(valid_public_key(value), f"{prefix}.config[{key}]",
                           "must be SendGrid's ECDSA P-256 verification key (base64 or PEM)")
        if key == "webhook_sns_hosts":
            problems.check(valid_sns_hosts(value), f"{prefix}.config[{key}]",
                           "must be comma-separated host names; * stands for one label")
        if key == "webhook_sns_topic_arns":
            problems.check(valid_sns_topic_arns(value), f"{prefix}.config[{key}]",
                           "must be comma-separated SNS topic ARNs "
                           "(arn:aws:sns:<region>:<account>:<topic>)")
        if key == "starttls":
            problems.check(value in ("true", "false"), f"{prefix}.config[{key}]",
                           "must be true or false")
    if "burst" in config:
        problems.check("rate_per_second" in config, f"{prefix}.config[burst]",
                       "needs config[rate_per_second]")
    for key in sorted(shape.required - config.keys()):
        problems.add(f"{prefix}.config[{key}]", f"is required for a {kind.value} provider")
    _webhook_problems(kind, config, secrets, prefix, problems)
    for key in secrets:
        problems.check(key in shape.secrets | WEBHOOK_SECRETS, f"{prefix}.secrets[{key}]",
                       f"is not a secret of a {kind.value} provider")
    for key in sorted(REQUIRED_SECRETS.get(kind, frozenset()) - secrets.keys()):
        problems.add(f"{prefix}.secrets[{key}]", f"is required for a {kind.value} provider")
    return problems


def _check_destination(host: str, private_destinations: bool, where: str,
                       problems: Violations) -> None:
    address = None if private_destinations else literal_address(host)
    if address is not None:
        problems.check(is_public_address(address), where,
                       f"must not be a private, loopback, link-local or reserved address "
                       f"({address}); the deployment allows them only with "
                       "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS")


# What each webhook format needs to tell the provider's reports from forgeries.
_WEBHOOK_NEEDS = {WebhookFormat.SENDGRID: (("config", "webhook_public_key"),),
                  # SNS signs every topic's messages with one certificate: only the topics
                  # named here tell this account's reports from anyone else's.
                  WebhookFormat.SES: (("config", "webhook_sns_topic_arns"),),
                  WebhookFormat.MAILGUN: (("secrets", "webhook_signing_key"),),
                  WebhookFormat.POSTMARK: (("config", "webhook_username"),
                                           ("secrets", "webhook_password")),
                  WebhookFormat.TWILIO: (("secrets", "webhook_auth_token"),)}


def _webhook_problems(kind: ProviderKind, config: dict[str, str], secrets: dict[str, str],
                      prefix: str, problems: Violations) -> None:
    if config.get("webhook_format") not in set(WebhookFormat):
        return
    wanted = WebhookFormat(config["webhook_format"])
    have = {"config": config, "secrets": secrets}
    for where, key in _WEBHOOK_NEEDS.get(wanted, ()):
        # A Twilio SMS provider's own auth token signs its status callbacks.
        if key == "webhook_auth_token" and kind is ProviderKind.TWILIO_SMS \
                and "auth_token" in secrets:
            continue
        problems.check(key in have[where], f"{prefix}.{where}[{key}]",
                       f"is required for webhook_format {wanted.value}")


def valid_from(value: str) -> bool:
    """Whether ``value`` can be an SMTP provider's From: exactly one mailbox whose address
    follows a recipient's rule (internationalised ones included); CJO_SMTP_FROM too."""
    try:
        parse_mailbox(value)
    except ValueError:
        return False
    return True


def _is_positive_number(value: str) -> bool:
    try:
        return 0 < float(value) <= 300
    except ValueError:
        return False
