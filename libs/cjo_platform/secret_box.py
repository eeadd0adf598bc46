"""Secrets encrypted at rest: the one place that encrypts and decrypts them, for every service
that stores one (delivery's provider secrets, identity's verification secrets).

Each service has its own keys in its own variable (``CJO_DELIVERY_SECRET_KEYS``,
``CJO_IDENTITY_SECRET_KEYS``), a comma-separated list of base64-encoded 32-byte keys. The first
key encrypts; every key decrypts, so a key is rotated by putting a new one first, re-encrypting
the stored rows (``python -m cjo_<service> reseal-secrets``, :func:`reseal_command`) and removing
the old one once nothing is stored under it any more (deploy/README.md, "Secret keys").

A stored value is ``enc:v1:<key id>:<base64url(nonce + ciphertext + tag)>``: AES-256-GCM with a
random 96-bit nonce. The key id (a hash of the key, never the key) says which key to use and
lets the re-encryption pass find rows not under the first key without decrypting them. The
workspace and the owner's id (a provider id; identity's setting name) are the associated data,
so a ciphertext copied into another row does not decrypt there (it would otherwise sign another
workspace's webhooks, or verify its users, with a stolen secret). A value without the ``enc:``
marker is the plaintext JSON written before encryption existed (or while no key is configured)
and is read as it is.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cjo_platform.config import Env
from cjo_platform.db.unit_of_work import Transactions, UnitOfWork
from cjo_platform.logging import get_logger

log = get_logger(__name__)

MARKER = "enc:v1:"
_KEY_BYTES = 32
_NONCE_BYTES = 12


class SecretsUnreadable(Exception):
    """A stored value that no configured key decrypts; the message names the key id, never
    any key or secret."""


@dataclass(frozen=True)
class _Key:
    key_id: str
    cipher: AESGCM


def key_id_of(key: bytes) -> str:
    """A short, stable name for a key: safe to store and log (a hash, not the key). The salt
    names delivery, the first user: changing it would orphan every stored value."""
    return hashlib.sha256(b"cjo delivery secret key\0" + key).hexdigest()[:12]


def _decode_key(text: str) -> bytes | None:
    """A key in standard or URL-safe base64 (``openssl rand -base64 32`` or a Fernet key)."""
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _KEY_BYTES else None


def _aad(workspace_id: str, owner_id: str) -> bytes:
    return f"{workspace_id}\0{owner_id}".encode()


class SecretBox:
    """Encrypts and decrypts one owner's secrets (a JSON object of strings). ``variable`` names
    where the keys come from, in the errors."""

    def __init__(self, keys: list[bytes], variable: str = "the secret keys") -> None:
        self._keys = [_Key(key_id_of(k), AESGCM(k)) for k in keys]
        self._by_id = {k.key_id: k for k in self._keys}
        self.variable = variable

    @property
    def encrypts(self) -> bool:
        """False without keys: secrets are then stored as plaintext JSON (development)."""
        return bool(self._keys)

    @property
    def current_key_id(self) -> str:
        """The id of the key that encrypts ("" without keys)."""
        return self._keys[0].key_id if self._keys else ""

    @property
    def current_prefix(self) -> str:
        """How every value written now begins (``enc:v1:<first key id>:``; "" without keys)."""
        return f"{MARKER}{self.current_key_id}:" if self._keys else ""

    def seal(self, workspace_id: str, owner_id: str, secrets: dict[str, str]) -> str:
        plain = json.dumps(secrets, sort_keys=True)
        if not self._keys:
            return plain
        key = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = key.cipher.encrypt(nonce, plain.encode(), _aad(workspace_id, owner_id))
        return f"{MARKER}{key.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def unseal(self, workspace_id: str, owner_id: str, stored: str) -> dict[str, str]:
        """The secrets in ``stored``; raises SecretsUnreadable when no key decrypts them."""
        if not stored.startswith(MARKER):
            secrets: dict[str, str] = json.loads(stored)
            return secrets
        key_id, _, body = stored.removeprefix(MARKER).partition(":")
        key = self._by_id.get(key_id)
        if key is None:
            raise SecretsUnreadable(
                f"stored secrets are encrypted under key {key_id}, which is not in "
                f"{self.variable}")
        try:
            raw = base64.urlsafe_b64decode(body)
            plain = key.cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                       _aad(workspace_id, owner_id))
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretsUnreadable(
                f"stored secrets do not decrypt under key {key_id}: the value was altered or "
                f"belongs to another row") from None
        opened: dict[str, str] = json.loads(plain)
        return opened

    def seal_text(self, workspace_id: str, owner_id: str, text: str) -> str:
        """One secret string, sealed (as ``{"secret": text}``); the text itself without keys or
        when empty (nothing to hide)."""
        if not self._keys or not text:
            return text
        return self.seal(workspace_id, owner_id, {"secret": text})

    def unseal_text(self, workspace_id: str, owner_id: str, stored: str) -> str:
        """The secret string :meth:`seal_text` stored (a value without the marker is the
        plaintext itself); raises SecretsUnreadable when no key decrypts it."""
        if not stored.startswith(MARKER):
            return stored
        return self.unseal(workspace_id, owner_id, stored).get("secret", "")

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is already in the form this box writes: under the first key, or
        plaintext for a box without keys (no rewrite needed)."""
        if not self._keys:
            return not stored.startswith(MARKER)
        return stored.startswith(self.current_prefix)


def load_secret_box(env: Env, environment: str, variable: str, what: str) -> SecretBox:
    """The keys of ``variable``, problems reported through ``env`` by name; ``what`` says
    what they encrypt ("provider secrets").

    Production refuses to start without a key; elsewhere no key means plaintext secrets and a
    warning (called once per process, from the bootstrap).
    """
    raw = env.str(variable, "")
    if not raw:
        if environment == "production":
            env.errors.append(
                f"{variable} is required with CJO_ENV=production: {what} are "
                f"encrypted with it (generate a key with `openssl rand -base64 32`)")
        else:
            log.warning(f"{variable} is not set: {what} are stored "
                        f"unencrypted (acceptable for development only)",
                        environment=environment)
        return SecretBox([], variable)
    keys: list[bytes] = []
    for position, text in enumerate(raw.split(","), start=1):
        key = _decode_key(text.strip())
        if key is None:
            # Never echo the value: it may be a real key with a typo.
            env.errors.append(f"{variable}: key {position} is not 32 bytes in base64 "
                              f"(generate one with `openssl rand -base64 32`)")
        elif key in keys:
            env.errors.append(f"{variable}: key {position} is listed twice")
        else:
            keys.append(key)
    return SecretBox(keys, variable)


RESEAL_COMMAND = "reseal-secrets"
# Exit codes: 0 every row is in the target form; 1 some row is unreadable or left; 2 refused
# (and bad configuration); 3 the command failed (cjo_platform.rpc.server.COMMAND_FAILED).
DONE, LEFT, REFUSED = 0, 1, 2


@dataclass(frozen=True)
class Sealed:
    """What a service stores sealed, for :func:`reseal_command`: its name in messages and the
    two passes over its rows."""

    what: str  # "provider secrets"
    service: str  # "delivery": the command is ``python -m cjo_<service> reseal-secrets``
    # Rewrite every row not in the form the writer box writes, opening with the reader box;
    # returns (rewritten, unreadable).
    reseal: Callable[[UnitOfWork, SecretBox, SecretBox], tuple[int, int]]
    # How many rows are not in the form the box writes.
    count_left: Callable[[UnitOfWork, SecretBox], int]


def _parser(sealed: Sealed, variable: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m cjo_{sealed.service} {RESEAL_COMMAND}",
        description=f"Re-encrypt the stored {sealed.what} under the first key of "
                    f"{variable}; exits 1 when a row is unreadable or left in another form.")
    parser.add_argument("--plaintext", action="store_true",
                        help="decrypt every row back to plaintext JSON instead (for a rollback "
                             "to a release without encryption); needs --confirm")
    parser.add_argument("--confirm", action="store_true",
                        help="confirm --plaintext: the secrets are then stored unencrypted")
    return parser


def reseal_command(transactions: Transactions, box: SecretBox, sealed: Sealed,
                   args: list[str]) -> int:
    """``python -m cjo_<service> reseal-secrets``: rewrite every stored secret under the first
    key of the box (or, with ``--plaintext --confirm``, back to plaintext JSON for a rollback
    to a release without encryption). Runs the command (its arguments after the command name);
    returns the exit code and prints ``key_id=... rewritten=N unreadable=N left=N`` on stdout.

    The operator runs it once every pod has the intended keys; its exit code says whether
    anything is left in another form, which is what dropping an old key waits for.
    """
    options = _parser(sealed, box.variable).parse_args(args)
    if not box.encrypts:
        print(f"{RESEAL_COMMAND}: {box.variable} is not set: there is no key to encrypt or "
              "decrypt with", file=sys.stderr)
        return REFUSED
    if options.plaintext and not options.confirm:
        print(f"{RESEAL_COMMAND}: refusing to store every one of the {sealed.what} unencrypted "
              "without --confirm (meant only for a rollback to a release without encryption)",
              file=sys.stderr)
        return REFUSED
    writer = SecretBox([], box.variable) if options.plaintext else box
    key_id = "plaintext" if options.plaintext else box.current_key_id
    rewritten, unreadable = transactions.run_sync(
        lambda uow: sealed.reseal(uow, box, writer))
    # Counted after the commit, apart from the rewrite: a row another pod wrote in another
    # form meanwhile shows here, so exit 0 means nothing is left at this moment.
    left = transactions.run_sync(lambda uow: sealed.count_left(uow, writer))
    log.info(f"{sealed.what} resealed", key_id=key_id, rewritten=rewritten,
             unreadable=unreadable, left=left)
    print(f"key_id={key_id} rewritten={rewritten} unreadable={unreadable} left={left}",
          flush=True)
    return LEFT if unreadable or left else DONE
