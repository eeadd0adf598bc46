"""An email's wire form (RFC 5322 + MIME), composed directly as bytes.

``email.message.EmailMessage`` with ``policy.SMTP`` parses every header it is given into a
structured object and flattens the tree again through a generator: most of an SMTP send's CPU
time. Here the common case is written out directly — short ASCII header values as they are,
bodies encoded with ``binascii`` — and only what needs real encoding work (a non-ASCII subject
or display name: RFC 2047 encoded words, a long header: folding) goes through the email
package's folding, which is exactly what the full ``EmailMessage`` would have produced for it.

The result is 7-bit clean (quoted-printable or base64 for non-ASCII bodies), so relays without
8BITMIME get the same bytes as everybody else, with CRLF line ends, not yet dot-stuffed (that is
the transport's job). The one exception is a message sent over SMTPUTF8 (an address with a
non-ASCII local part): its From and To are written in UTF-8 as RFC 6532 wants, since an
address cannot be an encoded word (RFC 2047 5).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from email.policy import SMTP
from email.utils import format_datetime
from functools import lru_cache

from cjo_delivery.domain.sending import OutgoingEmail

# 7bit forces quoted-printable or base64 for non-ASCII, as above.
_POLICY = SMTP.clone(cte_type="7bit")
# RFC 6532: UTF-8 header values as they are, for the address headers of an SMTPUTF8 message.
_UTF8_POLICY = SMTP.clone(utf8=True)
# Lines longer than this are written quoted-printable, as the email package does.
_MAX_LINE = _POLICY.max_line_length or 78
# An address the email package would write back unchanged (no display name, no quoting).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


def message_id_header(message_id: str) -> str:
    """The Message-ID of cjo's message ``message_id``: stable across attempts, so a receiver
    can drop the copy a repeated delivery produces."""
    return f"<{message_id}@cjo>"


def with_preheader(body: str, preheader: str) -> str:
    """Put the preheader first in the HTML body, hidden, where mail clients read the preview."""
    if not preheader:
        return body
    hidden = ('<div style="display:none;max-height:0;overflow:hidden;mso-hide:all">'
              f"{html.escape(preheader)}</div>")
    match = _BODY_TAG.search(body)
    if match is None:
        return hidden + body
    return body[: match.end()] + hidden + body[match.end():]


def build_email(email: OutgoingEmail, sender: str, date: datetime, *, to: str = "",
                utf8: bool = False, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """The message as sent: multipart/alternative with text and HTML when both exist, else the
    one body there is. ``to`` is the recipient as sent (its domain's A-label form; default
    ``email.to``); ``utf8``: the message goes over SMTPUTF8, From and To are written in UTF-8;
    ``headers``: more header fields (name, value). ValueError when a header cannot be written
    (a line break in it)."""
    to = to or email.to
    head = [
        _from_header(sender, utf8),
        _header("To", to, plain=_PLAIN_ADDRESS.fullmatch(to) is not None, utf8=utf8),
        _header("Subject", email.subject, plain="=?" not in email.subject),
        _date_header(date.replace(microsecond=0)),
        _header("Message-ID", message_id_header(email.message_id),
                plain=" " not in email.message_id),
        *(_header(name, value) for name, value in headers),
    ]
    if email.unsubscribe_url:
        # RFC 8058 one-click unsubscribe: mailbox providers POST to the URL themselves.
        head.append(_header("List-Unsubscribe", f"<{email.unsubscribe_url}>"))
        head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    head.append(b"MIME-Version: 1.0\r\n")
    body_html = with_preheader(email.html, email.preheader) if email.html else ""
    if email.text and body_html:
        parts = [_text_part(email.text, "plain"), _text_part(body_html, "html")]
        boundary = _boundary(parts)
        head.append(b'Content-Type: multipart/alternative; boundary="%s"\r\n\r\n' % boundary)
        for part in parts:
            head.append(b"--%s\r\n" % boundary)
            head.append(part)
        head.append(b"--%s--\r\n" % boundary)
    else:
        head.append(_text_part(email.text, "plain") if email.text
                    else _text_part(body_html, "html"))
    return b"".join(head)


def _header(name: str, value: str, *, plain: bool = True, utf8: bool = False) -> bytes:
    """``Name: value`` CRLF; through the email package's folding unless ``value`` is short
    ASCII that it would write as it is. ``utf8``: non-ASCII stays UTF-8 (RFC 6532)."""
    if "\r" in value or "\n" in value:
        # What EmailMessage says too: a line break would let the value inject headers.
        raise ValueError("Header values may not contain linefeed or carriage return characters")
    if plain and value.isascii() and len(name) + 2 + len(value) <= _MAX_LINE:
        return f"{name}: {value}\r\n".encode("ascii")
    # What EmailMessage does with it: parse into a structured header, fold that.
    policy = _UTF8_POLICY if utf8 else _POLICY
    folded: str = policy.header_factory(name, value).fold(policy=policy)
    return folded.encode() if utf8 else folded.encode("ascii")


@lru_cache(maxsize=64)
def _from_header(sender: str, utf8: bool) -> bytes:
    """A provider's From is the same for every message: encoded once."""
    return _header("From", sender, plain=_PLAIN_ADDRESS.fullmatch(sender) is not None,
                   utf8=utf8)


@lru_cache(maxsize=4)
def _date_header(second: datetime) -> bytes:
    """The Date field of the emails built within one second: formatted once (the email
    package's ``format_datetime`` was ~5% of an SMTP send's CPU)."""
    return _header("Date", format_datetime(second))


def _text_part(content: str, subtype: str) -> bytes:
    """Content-Type and Content-Transfer-Encoding headers, a blank line, the encoded body."""
    text = content.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if text.isascii() and max(map(len, text.split("\n"))) <= _MAX_LINE:
        cte, body = b"7bit", text.replace("\n", "\r\n").encode("ascii")
    else:
        raw = text.encode("utf-8")
        quoted = binascii.b2a_qp(raw, istext=True)
        encoded = base64.encodebytes(raw)
        # Whichever is shorter, as the email package chooses: QP for mostly-Latin text,
        # base64 for scripts that QP would triple in size.
        if len(quoted) <= len(encoded):
            cte, body = b"quoted-printable", quoted.replace(b"\n", b"\r\n")
        else:
            cte, body = b"base64", encoded.replace(b"\n", b"\r\n")
    return (b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: %s\r\n\r\n'
            % (subtype.encode("ascii"), cte)) + body


def _boundary(parts: list[bytes]) -> bytes:
    """A random MIME boundary found in no part ("=_" never occurs in QP or base64 text)."""
    while True:
        boundary = b"=_cjo_" + secrets.token_hex(12).encode("ascii")
        if not any(boundary in part for part in parts):
            return boundary
