"""Email addresses, internationalised ones included, and the one rule that says which we take.

An address has two parts that internationalise differently:

- a non-ASCII domain (``bücher.example``) has an ASCII form, its A-label (RFC 5890:
  ``xn--bcher-kva.example``), which every mail server understands;
- a non-ASCII local part (``jörg@``) has none: it can only travel over SMTPUTF8 (RFC 6531)
  with UTF-8 headers (RFC 6532), to a server that offers that.

So an address is sent in its ASCII form wherever one exists, and needs SMTPUTF8 only for a
non-ASCII local part.

Domains are converted with the ``idna`` package (IDNA 2008 + UTS 46 mapping), not the stdlib's
``"idna"`` codec: that one implements IDNA 2003, which maps ``ß`` to ``ss`` (``faß.de`` would
reach ``fass.de``, somebody else's domain) and accepts code points IDNA 2008 forbids. UTS 46
mapping (non-transitional) is what browsers and mail clients apply to what people type, so
``BÜCHER.example`` and ``bücher。example`` (an ideographic full stop) are taken as
``bücher.example``.

Every address has one spelling, its ``transport`` form: the local part in Unicode NFC (as typed
otherwise: local parts may be case-sensitive, RFC 5321 2.4, and delivery has always kept their
case) and the domain as its lower-case A-label. It is what goes on the wire, over SMTPUTF8 too,
where RFC 6531 3.2 allows A- or U-labels: an A-label leaves no IDNA conversion to the relays,
some of which still apply IDNA 2003 (and would send ``faß.de`` to ``fass.de``). It is also what
the suppression list stores and compares (``canonical_email``), so ``someone@bücher.example``,
``someone@BÜCHER.example`` and ``someone@xn--bcher-kva.example``, one mailbox, are one entry.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from email.errors import NonASCIILocalPartDefect, ObsoleteHeaderDefect
from email.headerregistry import Address, AddressHeader, HeaderRegistry

import idna

MAX_ADDRESS_LENGTH = 254
"""RFC 5321 caps a forward path at 256 octets including the angle brackets."""
MAX_LOCAL_LENGTH = 64
"""RFC 5321 4.5.3.1.1, in octets (UTF-8 ones for an internationalised local part)."""

# Deliberately narrower than RFC 5322/6532: dot-atoms only, a domain with at least one dot and
# valid DNS labels. Quoted local parts and IP literals are legal but in practice only typos, and
# nothing that could end an SMTP command or a header (spaces, CR, LF, <, >, commas) gets through.
# A local-part character is ASCII atext or any non-ASCII one (RFC 6532 UTF8-non-ascii); the
# non-ASCII ones that are invisible or spaces are refused separately (``_invisible``).
_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ASCII_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
# An ASCII domain that needs no IDNA work: no A-label to check (the common case, kept cheap).
_PLAIN_DOMAIN = re.compile(rf"(?!.*(?:^|\.)xn--){_LABEL}(?:\.{_LABEL})+", re.IGNORECASE)
_HEADERS = HeaderRegistry()


@dataclass(frozen=True)
class EmailAddress:
    """A valid address: ``local`` in NFC, ``domain`` in its normalised Unicode form (U-labels),
    ``ascii_domain`` its lower-case A-label form."""

    local: str
    domain: str
    ascii_domain: str

    @property
    def needs_smtputf8(self) -> bool:
        """Whether only SMTPUTF8 can carry it: a non-ASCII local part has no ASCII form."""
        return not self.local.isascii()

    @property
    def transport(self) -> str:
        """The one spelling of the address (see the module's comment): sent, and compared."""
        return f"{self.local}@{self.ascii_domain}"


@dataclass(frozen=True)
class Mailbox:
    """A From: one address and the name shown with it."""

    display_name: str
    address: EmailAddress

    @property
    def header(self) -> str:
        """The header value as written: rebuilt, never the configured text, with the address in
        its transport form."""
        return str(Address(display_name=self.display_name, username=self.address.local,
                           domain=self.address.ascii_domain))


def _invisible(text: str) -> bool:
    """Whether ``text`` holds a character nobody sees: a space, a control or format character
    (a zero-width space, a soft hyphen), a separator. IDNA mapping would silently drop some of
    them from a domain, so an address carrying one is refused rather than guessed at."""
    return not text.isprintable() or " " in text


def parse_email(address: str) -> EmailAddress:
    """The address, or ValueError saying what is wrong with it."""
    if _invisible(address):
        raise ValueError("contains a space or an invisible character")
    local, at, domain = address.rpartition("@")
    local = unicodedata.normalize("NFC", local)
    if not at or not _LOCAL.fullmatch(local):
        raise ValueError("not an address of the form local-part@domain")
    if len(local.encode()) > MAX_LOCAL_LENGTH:
        raise ValueError(f"the local part is longer than {MAX_LOCAL_LENGTH} octets")
    if _PLAIN_DOMAIN.fullmatch(domain):
        ascii_domain = unicode_domain = domain.lower()
    else:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
            unicode_domain = idna.decode(ascii_domain)
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"not a valid internationalised domain: {exc}") from None
    if not _ASCII_DOMAIN.fullmatch(ascii_domain):
        raise ValueError("the domain is not a host name with at least one dot")
    parsed = EmailAddress(local, unicode_domain, ascii_domain)
    if len(parsed.transport.encode()) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"longer than {MAX_ADDRESS_LENGTH} octets")
    return parsed


def is_plausible_email(address: str) -> bool:
    try:
        parse_email(address)
    except ValueError:
        return False
    return True


def canonical_email(address: str) -> str:
    """The spelling an address is stored and compared by; one that does not parse (stored
    before today's rules) stays as it is, as nothing can be sent to it anyway."""
    try:
        return parse_email(address).transport
    except ValueError:
        return address


def parse_mailbox(value: str) -> Mailbox:
    """A From header value (``Brand <news@brand.example>`` or a bare address): exactly one
    mailbox, no group, nothing the header parser had to repair; ValueError otherwise."""
    if _invisible(value.replace(" ", "")):  # spaces are fine between name and address
        raise ValueError("contains an invisible character")
    header = _HEADERS("From", value)
    assert isinstance(header, AddressHeader)
    # A non-ASCII local part is a defect to RFC 5322 and exactly what RFC 6532 allows; obsolete
    # syntax (a period in an unquoted name: "Acme Inc. <...>", "J. Smith <...>") must still be
    # accepted (RFC 5322 4), and the header is rebuilt with the name quoted anyway.
    defects = [d for d in header.defects
               if not isinstance(d, NonASCIILocalPartDefect | ObsoleteHeaderDefect)]
    if defects:
        raise ValueError(f"not one mailbox: {defects[0]}")
    groups = header.groups
    if len(groups) != 1 or groups[0].display_name is not None or len(groups[0].addresses) != 1:
        raise ValueError("must be exactly one mailbox")
    mailbox = groups[0].addresses[0]
    return Mailbox(mailbox.display_name, parse_email(mailbox.addr_spec))
