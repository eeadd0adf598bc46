"""What an event sent with a publishable (ingest-only) key may do.

Such a key sits in a web page or an app, so anyone can read it and send events with it. As with
Segment's write keys and Intercom's or Braze's identity verification: the key, not the caller,
names the event's source; a claim to be someone (a user_id, an email or a phone) counts only
with an HMAC-SHA256 of it under the workspace's secret, computed by the brand's backend, when
the workspace requires it; and what changes where a person is reached or whether they may be
(an email or phone trait, consent) needs such a proof whatever the workspace requires. A
breach fails the event alone, with INVALID_ARGUMENT naming the field; nothing is stored.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import replace

from cjo_identity.domain.events import SUBSCRIBED, UNSUBSCRIBED, Event, EventType
from cjo_identity.domain.identifiers import EMAIL, PHONE, USER_ID, Identifier, parse_identifier
from cjo_identity.domain.settings import IdentitySettings
from cjo_platform.engagement import is_message_event
from cjo_platform.errors import InvalidArgument, Violations

# Identifier types that claim to be a known person.
CLAIMS = (USER_ID, EMAIL, PHONE)
# Traits that change where a person is reached.
ADDRESS_TRAITS = (EMAIL, PHONE)


def verification_hash(secret: str, value: str) -> str:
    """What the brand's backend computes for ``value``: HMAC-SHA256, lower-case hex."""
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def publishable_source(key_id: str) -> str:
    return f"publishable-key:{key_id}"


def check_publishable(event: Event, sent: Sequence[tuple[str, str, str]],
                      settings: IdentitySettings, key_id: str) -> Event:
    """``event`` as a publishable key may send it (its source set by the key), or
    InvalidArgument naming every breach. ``sent``: the identifiers as sent, (type, value,
    verification hash)."""
    problems = Violations()
    problems.check(not event.profile_id, "profile_id",
                   "cannot be set with a publishable key")
    secret = settings.verification_secret
    verified: set[Identifier] = set()
    for index, (kind, value, proof) in enumerate(sent):
        field = f"identifiers[{index}].verification_hash"
        normalised = parse_identifier(kind, value, Violations(),
                                      known_types=settings.known_types,
                                      phone_region=settings.default_phone_region)
        if proof:
            candidates = {value} | ({normalised.value} if normalised else set())
            ok = bool(secret) and any(hmac.compare_digest(
                proof.strip().lower(), verification_hash(secret, v)) for v in candidates)
            if problems.check(ok, field, "does not match the value under the workspace's "
                              "identity verification secret") and normalised is not None:
                verified.add(normalised)
        elif settings.verification_required and kind in CLAIMS:
            problems.add(field, "is required: the workspace requires identity verification "
                         f"of {', '.join(CLAIMS)} identifiers sent with a publishable key")
    for trait in ADDRESS_TRAITS:
        trait_value = event.traits.get(trait)
        if trait_value is None:
            continue
        claimed = (parse_identifier(trait, trait_value, Violations(),
                                    known_types=settings.known_types,
                                    phone_region=settings.default_phone_region)
                   if isinstance(trait_value, str) else None)
        problems.check(claimed is not None and claimed in verified, f"traits.{trait}",
                       f"a publishable key may set {trait} only with a verified {trait} "
                       "identifier of the same value (verification_hash)")
    if event.type is EventType.TRACK and event.name in (SUBSCRIBED, UNSUBSCRIBED):
        problems.check(bool(verified), "name",
                       f"a publishable key may send {event.name} (consent) only with a "
                       "verified identifier (verification_hash)")
    # Delivery's engagement events (email_opened, link_clicked, push_opened ...) release
    # journeys' event waits on a message: only cjo itself reports them.
    problems.check(not (event.type is EventType.TRACK and is_message_event(event.name)), "name",
                   f"{event.name} is an engagement event that only cjo's delivery reports; "
                   "a publishable key cannot send it")
    if problems:
        raise InvalidArgument(problems.items)
    return replace(event, source=publishable_source(key_id))
