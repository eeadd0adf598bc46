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
``BÜCHER.example`` is taken as ``bücher.example``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import idna

MAX_ADDRESS_LENGTH = 254
"""RFC 5321 caps a forward path at 256 octets including the angle brackets."""
MAX_LOCAL_LENGTH = 64
"""RFC 5321 4.5.3.1.1, in octets (UTF-8 ones for an internationalised local part)."""

# Deliberately narrower than RFC 5322/6532: dot-atoms only, a domain with at least one dot and
# valid DNS labels. Quoted local parts and IP literals are legal but in practice only typos, and
# nothing that could end an SMTP command or a header (spaces, CR, LF, <, >, commas) gets through.
# A local-part character is ASCII atext or any non-ASCII one (RFC 6532 UTF8-non-ascii); the
# non-ASCII ones that are invisible or spaces are refused separately (not printable).
_ATEXT = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])"
_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ASCII_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")


@dataclass(frozen=True)
class EmailAddress:
    """A valid address: ``local@domain`` as given, and ``ascii_domain``, its A-label form."""

    local: str
    domain: str
    ascii_domain: str

    @property
    def needs_smtputf8(self) -> bool:
        """Whether only SMTPUTF8 can carry it: a non-ASCII local part has no ASCII form."""
        return not self.local.isascii()

    @property
    def transport(self) -> str:
        """The form to put on the wire: all ASCII when it can be; else as given, since the
        message needs SMTPUTF8 anyway and the receiver should see the address as written."""
        if self.needs_smtputf8:
            return f"{self.local}@{self.domain}"
        return f"{self.local}@{self.ascii_domain}"


def parse_email(address: str) -> EmailAddress:
    """The address, or ValueError saying what is wrong with it."""
    local, at, domain = address.rpartition("@")
    if not at or not _LOCAL.fullmatch(local) or not local.isprintable():
        raise ValueError("not an address of the form local-part@domain")
    if len(local.encode()) > MAX_LOCAL_LENGTH:
        raise ValueError(f"the local part is longer than {MAX_LOCAL_LENGTH} octets")
    if domain.isascii():
        ascii_domain = domain
    else:
        try:
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"not a valid internationalised domain: {exc}") from None
    if not _ASCII_DOMAIN.fullmatch(ascii_domain):
        raise ValueError("the domain is not a host name with at least one dot")
    parsed = EmailAddress(local, domain, ascii_domain)
    if len(parsed.transport.encode()) > MAX_ADDRESS_LENGTH:
        raise ValueError(f"longer than {MAX_ADDRESS_LENGTH} octets")
    return parsed


def is_plausible_email(address: str) -> bool:
    try:
        parse_email(address)
    except ValueError:
        return False
    return True
