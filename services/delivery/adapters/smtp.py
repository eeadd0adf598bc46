"""The email provider: SMTP through smtplib, in a thread pool so the event loop never blocks.

Connections are kept open and reused between messages (a TLS handshake and login per message
would cost more than the message); any error closes the connection it happened on.
"""

from __future__ import annotations

import asyncio
import html
import re
import smtplib
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr

from cjo_delivery.domain.sending import OutgoingEmail, OutgoingMessage, ProviderError
from cjo_platform.clock import Clock

# 7bit forces quoted-printable or base64 for non-ASCII bodies, so relays without 8BITMIME get
# the same bytes as everybody else.
_POLICY = SMTP.clone(cte_type="7bit")

# Servers drop idle clients after a minute or more (Postfix: 300 s); reusing a connection idle
# for less than this is safe, an older one is closed rather than risked. This measures socket
# idleness, not business time, so it uses the monotonic clock and not the injected one.
_MAX_IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 1025
    sender: str = "cjo <no-reply@cjo.localhost>"
    starttls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    timeout_seconds: float = 10.0
    connections: int = 8
    # TLS context for STARTTLS; None: the system's trust store with host name checks, or the
    # CA bundle ``ca_file`` (PEM) when one is set (a relay with a private CA).
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    ca_file: str = ""

    @property
    def envelope_sender(self) -> str:
        return parseaddr(self.sender)[1]


def message_id_header(message_id: str) -> str:
    """The Message-ID of cjo's message ``message_id``: stable across attempts, so a receiver
    can drop the copy a repeated delivery produces."""
    return f"<{message_id}@cjo>"


_BODY_TAG = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


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


def build_email(email: OutgoingEmail, sender: str, date: datetime) -> EmailMessage:
    """multipart/alternative with text and HTML when both exist, else the one body there is."""
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = email.subject
    msg["From"] = sender
    msg["To"] = email.to
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id_header(email.message_id)
    if email.unsubscribe_url:
        # RFC 8058 one-click unsubscribe: mailbox providers POST to the URL themselves.
        msg["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    body_html = with_preheader(email.html, email.preheader) if email.html else ""
    if email.text:
        msg.set_content(email.text)
        if body_html:
            msg.add_alternative(body_html, subtype="html")
    else:
        msg.set_content(body_html, subtype="html")
    return msg


def _reply(code: int, text: bytes | str) -> str:
    decoded = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{code} {decoded}".strip()


def classify(exc: BaseException, where: str) -> ProviderError:
    """Whether a failure is worth retrying. SMTP says so itself for a message: 4xx means "try
    again later", 5xx "never". Failures to reach or log in to the server are the deployment's,
    not the message's, so they are retried whatever their code."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()), (550, b"recipient refused"))
        # 5xx on RCPT is a hard bounce: the mailbox does not exist or never takes our mail.
        return ProviderError(f"recipient refused: {_reply(code, text)}", transient=code < 500,
                             bounce=code >= 500)
    if isinstance(exc, smtplib.SMTPAuthenticationError) and exc.smtp_code >= 500:
        # 535 and kin: the credentials are wrong, and stay wrong until somebody changes them;
        # retrying every message would only hammer the relay (and may lock the account).
        return ProviderError(f"{where}: authentication failed: "
                             f"{_reply(exc.smtp_code, exc.smtp_error)}", transient=False)
    if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPHeloError
                  | smtplib.SMTPAuthenticationError):
        return ProviderError(f"{where}: {_reply(exc.smtp_code, exc.smtp_error)}", transient=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        return ProviderError(_reply(exc.smtp_code, exc.smtp_error),
                             transient=exc.smtp_code < 500)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return ProviderError(f"{where}: connection closed: {exc}", transient=True)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ProviderError(f"{where}: {exc}", transient=True)
    if isinstance(exc, TimeoutError):
        return ProviderError(f"{where}: timed out", transient=True)
    if isinstance(exc, OSError):  # refused, reset, DNS, TLS: all smtplib errors are OSErrors too
        return ProviderError(f"{where}: {exc.strerror or exc}", transient=True)
    if isinstance(exc, UnicodeError | ValueError):  # the message cannot be encoded: never will
        return ProviderError(f"cannot encode the message: {exc}", transient=False)
    return ProviderError(f"{where}: {type(exc).__name__}: {exc}", transient=True)


class SmtpProvider:
    """An EmailProvider speaking SMTP to one relay."""

    def __init__(self, settings: SmtpSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._where = f"SMTP server {settings.host}:{settings.port}"
        self._idle: list[tuple[smtplib.SMTP, float]] = []
        self._tls: ssl.SSLContext | None = settings.tls_context
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=settings.connections,
                                            thread_name_prefix="smtp")

    async def send(self, message: OutgoingMessage) -> str:
        if message.email is None:
            raise ProviderError("an SMTP provider sends only email", transient=False)
        return await self.send_email(message.as_email())

    async def send_email(self, email: OutgoingEmail) -> str:
        try:
            msg = build_email(email, self.settings.sender, self.clock.now())
        except (ValueError, UnicodeError) as exc:
            raise classify(exc, self._where) from exc
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._send_blocking, msg, email.to)
        return message_id_header(email.message_id)

    def _send_blocking(self, msg: EmailMessage, to: str) -> None:
        try:
            smtp = self._acquire()
        except Exception as exc:
            raise classify(exc, self._where) from exc
        try:
            smtp.send_message(msg, from_addr=self.settings.envelope_sender, to_addrs=[to])
        except Exception as exc:
            _close(smtp)
            raise classify(exc, self._where) from exc
        self._release(smtp)

    def _acquire(self) -> smtplib.SMTP:
        now = time.monotonic()
        with self._lock:
            while self._idle:
                smtp, since = self._idle.pop()
                if now - since < _MAX_IDLE_SECONDS:
                    return smtp
                _close(smtp)
        return self._connect()

    def _release(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            if len(self._idle) < self.settings.connections:
                self._idle.append((smtp, time.monotonic()))
                return
        _close(smtp)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds)
        try:
            smtp.ehlo()
            if s.starttls:
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password)
        except BaseException:
            _close(smtp)
            raise
        return smtp

    def _tls_context(self) -> ssl.SSLContext:
        """Made on first use, in the sending thread: a missing or bad CA file is an OSError
        the message's outcome reports, not a crash of the sender."""
        if self._tls is None:
            # Two threads may both make one; either is as good.
            self._tls = ssl.create_default_context(cafile=self.settings.ca_file or None)
        return self._tls

    async def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []

        def close_all() -> None:
            for smtp, _ in idle:
                _close(smtp)

        await asyncio.get_running_loop().run_in_executor(self._executor, close_all)
        self._executor.shutdown(wait=False)


def _close(smtp: smtplib.SMTP) -> None:
    """QUIT politely if the server still listens; a dead socket is just closed."""
    try:
        smtp.quit()
    except Exception:
        smtp.close()
