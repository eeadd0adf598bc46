"""The email provider: SMTP spoken over an asyncio protocol, on the event loop, with a pool of
persistent connections per relay.

A connection is opened (EHLO, STARTTLS, AUTH) once and then carries message after message: after
a transaction the server has reset its state itself (RFC 5321 4.1.1.4), so the next MAIL FROM
follows directly; a transaction that failed with a reply is ended with RSET and the connection
kept. Where the server offers PIPELINING (RFC 2920; Postfix, Exchange, the big relays do),
MAIL FROM, RCPT TO and DATA go out in one write: two round trips per message instead of four.
A connection idle for too long, one that timed out, broke, or got 421 is closed.

Internationalised addresses (see domain/addresses.py): a non-ASCII domain is sent as its
A-label, with SMTPUTF8 or without, so any server takes it and none converts it; a non-ASCII
local part (recipient or From) needs SMTPUTF8 (RFC 6531), asked for in MAIL FROM with
BODY=8BITMIME where offered. A server that does not offer SMTPUTF8 can never take such a
message: it is refused without being tried (the next email provider of the workspace may take
it; with none, it fails for good), and the connection goes on with the next message.

Errors are raised as smtplib's exception types, so ``classify`` reads them the same whichever
path produced them.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import smtplib
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import cast

from cjo_delivery.adapters.destinations import connect
from cjo_delivery.adapters.smtp_message import (
    build_email,
    message_id_header,
    with_preheader,
)
from cjo_delivery.domain.addresses import parse_email, parse_mailbox
from cjo_delivery.domain.provider_events import tagging_headers
from cjo_delivery.domain.sending import OutgoingEmail, OutgoingMessage, ProviderError
from cjo_platform.clock import Clock

__all__ = ["SmtpProvider", "SmtpSettings", "build_email", "classify", "message_id_header",
           "with_preheader"]

# Servers drop idle clients after a minute or more (Postfix: 300 s); reusing a connection idle
# for less than this is safe, an older one is closed rather than risked. This measures socket
# idleness, not business time, so it uses the monotonic clock and not the injected one.
_MAX_IDLE_SECONDS = 30.0
# AUTH mechanisms in smtplib's order of preference; each one the server offers is tried.
_AUTH_MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 1025
    sender: str = "cjo <no-reply@cjo.localhost>"
    starttls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    timeout_seconds: float = 10.0
    # How long the reply to the content's end may take (counted from handing the content to
    # the connection, so a large body's transfer counts too). Longer than the others: relays
    # scan the content before they answer, and a message timed out here may have been taken
    # (RFC 5321 4.5.3.2.6 allows 10 minutes; a retry would send it twice).
    data_timeout_seconds: float = 60.0
    connections: int = 8
    # TLS context for STARTTLS; None: the system's trust store with host name checks, or the
    # CA bundle ``ca_file`` (PEM) when one is set (a relay with a private CA).
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    ca_file: str = ""
    # The provider's webhook_format: which relay's tagging headers each email carries, so that
    # the relay's reports name cjo's message (domain/provider_events.tagging_headers).
    webhook_format: str = ""
    # Whether ``host`` may be a private address (adapters/destinations.py): the deployment's
    # own server (CJO_SMTP_*) always, a workspace's with CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS.
    allow_private: bool = False


@dataclass(frozen=True)
class _From:
    """The configured sender as sent: the From header (rebuilt from the one mailbox configured,
    its address in the form it travels in), the envelope sender, and whether it needs SMTPUTF8
    (a non-ASCII local part)."""

    header: str
    envelope: str
    needs_smtputf8: bool

    @classmethod
    def of(cls, sender: str) -> _From:
        mailbox = parse_mailbox(sender)  # ValueError for a malformed one, or for two
        address = mailbox.address
        return cls(mailbox.header, address.transport, address.needs_smtputf8)


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


# A reply line longer than this is not SMTP (RFC 5321 4.5.3.1.5: 512 octets): the connection is
# dropped rather than buffered without end (what asyncio's StreamReader limit was for).
_MAX_REPLY_LINE = 65536


class _Replies(asyncio.Protocol):
    """The receiving side of one SMTP connection: the server's reply lines as they arrive, for
    the one command sequence under way to take. A protocol rather than asyncio's streams: a
    reply awaited through ``StreamReader.readline`` inside ``asyncio.timeout`` cost ~7 us more
    CPU per round trip (its buffer, the waiter future and the timeout's context and task
    bookkeeping), and an email is four round trips where the server offers no PIPELINING."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lines: deque[bytes] = deque()
        self.partial = b""
        self.ended: str | None = None  # why the connection is gone, once it is
        self.waiter: asyncio.Future[None] | None = None
        self.buffered = 0  # bytes in ``lines``
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.partial:
            data, self.partial = self.partial + data, b""
        if b"\n" in data:
            *complete, rest = data.split(b"\n")
            if max(map(len, complete)) > _MAX_REPLY_LINE:
                rest = data  # a whole line too long, however the reads split it
            else:
                self.lines.extend(line + b"\n" for line in complete)
                self.buffered += len(data) - len(rest)
        else:
            rest = data
        if len(rest) > _MAX_REPLY_LINE:
            self._end("reply line too long")
            if self.transport is not None:
                self.transport.close()
            return
        self.partial = rest
        if self.buffered > _MAX_REPLY_LINE and not self.paused and self.transport is not None:
            self.paused = True  # what StreamReader did past twice its limit
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._end("Connection unexpectedly closed")
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(f"Connection unexpectedly closed: {exc}" if exc
                  else "Connection unexpectedly closed")

    def _end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def line(self, deadline: float) -> bytes:
        """The next reply line; TimeoutError once the loop's clock passes ``deadline``."""
        while not self.lines:
            if self.ended is not None:
                raise smtplib.SMTPServerDisconnected(self.ended)
            loop = asyncio.get_running_loop()
            waiter = self.waiter = loop.create_future()
            timer = loop.call_at(deadline, _time_out, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self.waiter = None
        line = self.lines.popleft()
        self.buffered -= len(line)
        if self.paused and self.buffered <= _MAX_REPLY_LINE // 2 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return line


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Connection:
    """One SMTP session. Every reply is awaited at most ``timeout`` seconds (TimeoutError); the
    three replies to a pipelined MAIL FROM, RCPT TO and DATA, one round trip, together; the
    reply to the content, ``data_timeout``."""

    def __init__(self, transport: asyncio.Transport, replies: _Replies,
                 timeout: float, data_timeout: float) -> None:
        self.transport = transport
        self.replies_in = replies
        self.timeout = timeout
        self.data_timeout = data_timeout
        self.extensions: dict[str, str] = {}
        self.idle_since = time.monotonic()

    @classmethod
    async def open(cls, settings: SmtpSettings, local_name: str,
                   tls: ssl.SSLContext | None) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(settings.timeout_seconds):
            transport, replies = await connect(_Replies, settings.host, settings.port,
                                               allow_private=settings.allow_private)
        conn = cls(transport, replies, settings.timeout_seconds, settings.data_timeout_seconds)
        try:
            code, text = await conn.reply()
            if code != 220:
                raise smtplib.SMTPConnectError(code, text)
            await conn.hello(local_name)
            if settings.starttls:
                if "starttls" not in conn.extensions:
                    raise smtplib.SMTPNotSupportedError(
                        "STARTTLS extension not supported by server.")
                code, text = await conn.command(b"STARTTLS")
                if code != 220:
                    raise smtplib.SMTPResponseException(code, text)
                if replies.lines or replies.partial:  # sent before the handshake: injected
                    raise smtplib.SMTPServerDisconnected("data after the reply to STARTTLS")
                assert tls is not None
                async with asyncio.timeout(settings.timeout_seconds):
                    upgraded = await loop.start_tls(conn.transport, replies, tls,
                                                    server_hostname=settings.host)
                conn.transport = replies.transport = cast(asyncio.Transport, upgraded)
                await conn.hello(local_name)
            if settings.username:
                await conn.login(settings.username, settings.password)
        except BaseException:
            conn.close()
            raise
        return conn

    async def reply(self) -> tuple[int, bytes]:
        """One reply, all of its lines: the code and the text (lines joined by newlines)."""
        return await self._reply(asyncio.get_running_loop().time() + self.timeout)

    async def replies(self, count: int) -> list[tuple[int, bytes]]:
        """The replies to ``count`` pipelined commands: one round trip, so one timeout."""
        deadline = asyncio.get_running_loop().time() + self.timeout
        return [await self._reply(deadline) for _ in range(count)]

    async def _reply(self, deadline: float) -> tuple[int, bytes]:
        lines: list[bytes] = []
        while True:
            try:
                line = await self.replies_in.line(deadline)
            except smtplib.SMTPServerDisconnected:
                self.close()
                raise
            lines.append(line[4:].rstrip(b"\r\n"))
            if line[3:4] != b"-":
                break
        try:
            code = int(line[:3])
        except ValueError:
            self.close()
            raise smtplib.SMTPServerDisconnected(f"not an SMTP reply: {line!r}") from None
        if code == 421:  # the server is shutting this connection down
            self.close()
        return code, b"\n".join(lines)

    async def command(self, line: bytes) -> tuple[int, bytes]:
        self.transport.write(line + b"\r\n")
        return await self.reply()

    async def hello(self, local_name: str) -> None:
        code, text = await self.command(b"EHLO " + local_name.encode("ascii"))
        if code != 250:
            code, text = await self.command(b"HELO " + local_name.encode("ascii"))
            if code != 250:
                raise smtplib.SMTPHeloError(code, text)
            self.extensions = {}
            return
        extensions = {}
        for line in text.decode("latin-1").split("\n")[1:]:
            keyword, _, params = line.partition(" ")
            extensions[keyword.lower()] = params
        self.extensions = extensions

    async def login(self, user: str, password: str) -> None:
        if "auth" not in self.extensions:
            raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
        offered = self.extensions["auth"].upper().split()
        last: smtplib.SMTPAuthenticationError | None = None
        for mechanism in _AUTH_MECHANISMS:
            if mechanism not in offered:
                continue
            code, text = await self._authenticate(mechanism, user, password)
            if code in (235, 503):  # 503: already authenticated
                return
            last = smtplib.SMTPAuthenticationError(code, text)
        if last is None:
            raise smtplib.SMTPException("No suitable authentication method found.")
        raise last

    async def _authenticate(self, mechanism: str, user: str,
                            password: str) -> tuple[int, bytes]:
        def b64(data: bytes) -> bytes:
            return base64.b64encode(data)

        if mechanism == "PLAIN":
            return await self.command(
                b"AUTH PLAIN " + b64(b"\0" + user.encode() + b"\0" + password.encode()))
        code, text = await self.command(b"AUTH " + mechanism.encode("ascii"))
        if mechanism == "CRAM-MD5":
            if code != 334:
                return code, text
            digest = hmac.HMAC(password.encode(), base64.b64decode(text), "md5").hexdigest()
            return await self.command(b64(f"{user} {digest}".encode()))
        for answer in (user, password):  # LOGIN: the user name, then the password
            if code != 334:
                return code, text
            code, text = await self.command(b64(answer.encode()))
        return code, text

    @property
    def smtputf8(self) -> bool:
        return "smtputf8" in self.extensions

    async def send(self, sender: str, to: str, data: bytes, *, utf8: bool = False) -> None:
        """One transaction; a refusal raises smtplib's exception for it after RSET. ``utf8``:
        the addresses or headers are UTF-8, the server offers SMTPUTF8 (RFC 6531)."""
        params = ""
        if utf8:
            # RFC 6531 3.4: UTF-8 headers are 8-bit content, so say so where the server can.
            params = " SMTPUTF8 BODY=8BITMIME" if "8bitmime" in self.extensions else " SMTPUTF8"
        mail = f"MAIL FROM:<{sender}>{params}".encode()
        rcpt = f"RCPT TO:<{to}>".encode()
        if "pipelining" in self.extensions:
            self.transport.write(b"%s\r\n%s\r\nDATA\r\n" % (mail, rcpt))
            replies = await self.replies(3)
        else:
            replies = [await self.command(mail)]
            if replies[0][0] == 250:
                replies.append(await self.command(rcpt))
                if replies[1][0] in (250, 251):
                    replies.append(await self.command(b"DATA"))
        (mail_code, mail_text), *rest = replies
        refusal: smtplib.SMTPException | None = None
        if mail_code != 250:
            refusal = smtplib.SMTPSenderRefused(mail_code, mail_text, sender)
        elif rest[0][0] not in (250, 251):
            refusal = smtplib.SMTPRecipientsRefused({to: rest[0]})
        elif rest[1][0] != 354:
            refusal = smtplib.SMTPDataError(*rest[1])
        if refusal is not None:
            if len(rest) == 2 and rest[1][0] == 354:
                # Pipelined DATA accepted although the transaction failed: end it empty.
                await self.command(b".")
            await self.reset()
            raise refusal
        # Dot-stuffing (RFC 5321 4.5.2): a line that starts with "." gets another one.
        if data.startswith(b"."):
            data = b"." + data
        self.transport.write(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, text = await self._reply(asyncio.get_running_loop().time() + self.data_timeout)
        if code != 250:
            await self.reset()
            raise smtplib.SMTPDataError(code, text)
        self.idle_since = time.monotonic()

    async def reset(self) -> None:
        """RSET after a failed transaction; the connection is closed when that fails too."""
        if self.closed:
            return
        try:
            code, _ = await self.command(b"RSET")
        except (OSError, smtplib.SMTPException):
            code = 0
        if code != 250:
            self.close()

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    async def quit(self) -> None:
        """QUIT politely if the server still listens; a dead socket is just closed."""
        try:
            if not self.closed:
                await self.command(b"QUIT")
        except (OSError, smtplib.SMTPException):
            pass
        finally:  # cancelled too
            self.close()

    def close(self) -> None:
        self.transport.close()


class SmtpProvider:
    """An EmailProvider speaking SMTP to one relay over at most ``connections`` connections."""

    def __init__(self, settings: SmtpSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self._where = f"SMTP server {settings.host}:{settings.port}"
        self._idle: list[_Connection] = []
        self._tls: ssl.SSLContext | None = settings.tls_context
        self._local_name = ""
        self._slots: asyncio.Semaphore | None = None  # made on the loop that sends
        self._from: _From | None = None

    async def send(self, message: OutgoingMessage) -> str:
        if message.email is None:
            raise ProviderError("an SMTP provider sends only email", transient=False)
        return await self.send_email(message.as_email())

    async def send_email(self, email: OutgoingEmail) -> str:
        sender = self._sender()
        try:
            to = parse_email(email.to)
        except ValueError as exc:
            raise ProviderError(f"recipient address {email.to!r}: {exc}",
                                transient=False) from exc
        needs_smtputf8 = [a for a, needs in ((sender.envelope, sender.needs_smtputf8),
                                             (to.transport, to.needs_smtputf8)) if needs]
        try:
            data = build_email(email, sender.header, self.clock.now(), to=to.transport,
                               utf8=bool(needs_smtputf8),
                               headers=tagging_headers(self.settings.webhook_format,
                                                       email.message_id))
        except (ValueError, UnicodeError) as exc:
            raise classify(exc, self._where) from exc
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.connections)
        async with self._slots:
            try:
                conn = await self._acquire()
            except Exception as exc:
                raise classify(exc, self._where) from exc
            if needs_smtputf8 and not conn.smtputf8:
                self._release(conn)  # nothing was sent on it; the next message may use it
                raise ProviderError(
                    f"{self._where} does not offer SMTPUTF8 (RFC 6531), needed for "
                    f"{' and '.join(needs_smtputf8)}: a local part that is not ASCII has no "
                    "ASCII form", transient=False, unsupported=True)
            try:
                await conn.send(sender.envelope, to.transport, data,
                                utf8=bool(needs_smtputf8))
            except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as exc:
                self._release(conn)  # a refusal; the connection was reset and still works
                raise classify(exc, self._where) from exc
            except BaseException as exc:  # broken, timed out, or cancelled mid-transaction
                conn.close()
                if isinstance(exc, Exception):
                    raise classify(exc, self._where) from exc
                raise
            self._release(conn)
        return message_id_header(email.message_id)

    def _sender(self) -> _From:
        """The configured From, parsed once. Malformed, it fails every message for good (as
        wrong credentials do) until the configuration is fixed; start-up and the provider API
        refuse such a From, so only an older stored configuration can get here."""
        if self._from is None:
            try:
                self._from = _From.of(self.settings.sender)
            except ValueError as exc:
                raise ProviderError(f"the From address {self.settings.sender!r}: {exc}",
                                    transient=False) from exc
        return self._from

    async def _acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            # A reply nobody asked for (a relay talking to an idle connection) puts the
            # replies out of step with the commands: such a connection is not used again.
            if (now - conn.idle_since < _MAX_IDLE_SECONDS and not conn.closed
                    and not conn.replies_in.lines and not conn.replies_in.partial):
                return conn
            # Closed, not QUIT: a relay that stopped answering would hold the send up to a
            # timeout per stale connection.
            conn.close()
        if not self._local_name:
            # What smtplib says in EHLO; the look-up may block, so not on the loop.
            self._local_name = await asyncio.to_thread(socket.getfqdn)
        return await _Connection.open(self.settings, self._local_name,
                                      self._tls_context() if self.settings.starttls else None)

    def _release(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def _tls_context(self) -> ssl.SSLContext:
        """Made on first use: a missing or bad CA file is an OSError the message's outcome
        reports, not a crash of the sender."""
        if self._tls is None:
            self._tls = ssl.create_default_context(cafile=self.settings.ca_file or None)
        return self._tls

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.quit() for conn in idle))
