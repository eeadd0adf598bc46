"""Provider secrets encrypted at rest: the one place that encrypts and decrypts them.

Keys come from ``CJO_DELIVERY_SECRET_KEYS``, a comma-separated list of base64-encoded 32-byte
keys. The first key encrypts; every key decrypts, so a key is rotated by putting a new one first,
re-encrypting the stored rows (``python -m cjo_delivery reseal-secrets``) and removing the old
one once nothing is stored under it any more (deploy/README.md, "Provider secret keys").

A stored value is ``enc:v1:<key id>:<base64url(nonce + ciphertext + tag)>``: AES-256-GCM with a
random 96-bit nonce. The key id (a hash of the key, never the key) says which key to use and
lets the re-encryption pass find rows not under the first key without decrypting them. The
workspace and provider id are the associated data, so a ciphertext copied into another
provider's row does not decrypt there (it would otherwise sign another workspace's webhooks with
a stolen secret). A value without the ``enc:`` marker is the plaintext JSON written before
encryption existed (or while no key is configured) and is read as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cjo_platform.config import Env
from cjo_platform.logging import get_logger

log = get_logger(__name__)

KEYS_VARIABLE = "CJO_DELIVERY_SECRET_KEYS"
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
    """A short, stable name for a key: safe to store and log (a hash, not the key)."""
    return hashlib.sha256(b"cjo delivery secret key\0" + key).hexdigest()[:12]


def _decode_key(text: str) -> bytes | None:
    """A key in standard or URL-safe base64 (``openssl rand -base64 32`` or a Fernet key)."""
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == _KEY_BYTES else None


def _aad(workspace_id: str, provider_id: str) -> bytes:
    return f"{workspace_id}\0{provider_id}".encode()


class SecretBox:
    """Encrypts and decrypts one provider's secrets (a JSON object of strings)."""

    def __init__(self, keys: list[bytes]) -> None:
        self._keys = [_Key(key_id_of(k), AESGCM(k)) for k in keys]
        self._by_id = {k.key_id: k for k in self._keys}

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

    def seal(self, workspace_id: str, provider_id: str, secrets: dict[str, str]) -> str:
        plain = json.dumps(secrets, sort_keys=True)
        if not self._keys:
            return plain
        key = self._keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = key.cipher.encrypt(nonce, plain.encode(), _aad(workspace_id, provider_id))
        return f"{MARKER}{key.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def unseal(self, workspace_id: str, provider_id: str, stored: str) -> dict[str, str]:
        """The secrets in ``stored``; raises SecretsUnreadable when no key decrypts them."""
        if not stored.startswith(MARKER):
            secrets: dict[str, str] = json.loads(stored)
            return secrets
        key_id, _, body = stored.removeprefix(MARKER).partition(":")
        key = self._by_id.get(key_id)
        if key is None:
            raise SecretsUnreadable(
                f"stored secrets are encrypted under key {key_id}, which is not in "
                f"{KEYS_VARIABLE}")
        try:
            raw = base64.urlsafe_b64decode(body)
            plain = key.cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:],
                                       _aad(workspace_id, provider_id))
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretsUnreadable(
                f"stored secrets do not decrypt under key {key_id}: the value was altered or "
                f"belongs to another provider") from None
        opened: dict[str, str] = json.loads(plain)
        return opened

    def is_current(self, stored: str) -> bool:
        """Whether ``stored`` is already in the form this box writes: under the first key, or
        plaintext for a box without keys (no rewrite needed)."""
        if not self._keys:
            return not stored.startswith(MARKER)
        return stored.startswith(self.current_prefix)


def load_secret_box(env: Env, environment: str) -> SecretBox:
    """The keys of ``CJO_DELIVERY_SECRET_KEYS``, problems reported through ``env`` by name.

    Production refuses to start without a key; elsewhere no key means plaintext secrets and a
    warning (called once per process, from the bootstrap).
    """
    raw = env.str(KEYS_VARIABLE, "")
    if not raw:
        if environment == "production":
            env.errors.append(
                f"{KEYS_VARIABLE} is required with CJO_ENV=production: provider secrets are "
                f"encrypted with it (generate a key with `openssl rand -base64 32`)")
        else:
            log.warning(f"{KEYS_VARIABLE} is not set: provider secrets are stored "
                        f"unencrypted (acceptable for development only)",
                        environment=environment)
        return SecretBox([])
    keys: list[bytes] = []
    for position, text in enumerate(raw.split(","), start=1):
        key = _decode_key(text.strip())
        if key is None:
            # Never echo the value: it may be a real key with a typo.
            env.errors.append(f"{KEYS_VARIABLE}: key {position} is not 32 bytes in base64 "
                              f"(generate one with `openssl rand -base64 32`)")
        elif key in keys:
            env.errors.append(f"{KEYS_VARIABLE}: key {position} is listed twice")
        else:
            keys.append(key)
    return SecretBox(keys)
