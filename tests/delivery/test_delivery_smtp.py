"""The SMTP provider against real SMTP servers on loopback: connection reuse, PIPELINING, RSET
after a refusal, dot-stuffing. aiosmtpd plays the relay; one test uses a small hand-written
server that answers only pipelined command groups, so a client that waits for each reply hangs
there (and times out) instead of passing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from delivery_support import SmtpSink

from cjo_delivery.adapters.smtp import SmtpProvider, SmtpSettings
from cjo_delivery.domain.sending import OutgoingEmail, ProviderError
from cjo_platform.clock import ManualClock
from support import free_port


class CountingSink(SmtpSink):
    """Counts EHLOs (one per connection) and may offer PIPELINING."""

    def __init__(self, pipelining: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipelining = pipelining
        self.hellos = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        with self.lock:
            self.hellos += 1
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses


@contextmanager
def relay(sink: SmtpSink) -> Iterator[int]:
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def email(n: int, to: str = "", text: str = "Hello Ada") -> OutgoingEmail:
    return OutgoingEmail(message_id=f"m{n}", to=to or f"user{n}@example.com",
                         subject=f"Order {n}", preheader="", html=f"<p>Order {n}</p>",
                         text=text)


def provider(port: int, connections: int = 4) -> SmtpProvider:
    return SmtpProvider(SmtpSettings(port=port, connections=connections, timeout_seconds=3),
                        ManualClock())


@pytest.mark.parametrize("pipelining", [False, True])
async def test_many_messages_share_a_few_connections(pipelining: bool) -> None:
    sink = CountingSink(pipelining=pipelining)
    with relay(sink) as port:
        smtp = provider(port, connections=4)
        ids = await asyncio.gather(*(smtp.send_email(email(n)) for n in range(40)))
        await smtp.close()
    assert ids == [f"<m{n}@cjo>" for n in range(40)]
    assert sorted(m["Message-ID"] for m in sink.received) == sorted(ids)
    assert sorted(to for _, [to] in sink.envelopes) == sorted(f"user{n}@example.com"
                                                              for n in range(40))
    assert 1 <= sink.hellos <= 4  # at most one connection per slot, each kept for many


@pytest.mark.parametrize("pipelining", [False, True])
async def test_a_refusal_resets_the_transaction_and_keeps_the_connection(
        pipelining: bool) -> None:
    sink = CountingSink(pipelining=pipelining, data_replies=["451 4.3.0 try later"],
                        refuse={"gone@example.com": "550 5.1.1 no such user"})
    with relay(sink) as port:
        smtp = provider(port, connections=1)
        with pytest.raises(ProviderError) as bounced:
            await smtp.send_email(email(1, to="gone@example.com"))
        assert bounced.value.bounce and not bounced.value.transient
        assert "550 5.1.1 no such user" in bounced.value.message
        with pytest.raises(ProviderError) as later:
            await smtp.send_email(email(2))
        assert later.value.transient and "451 4.3.0 try later" in later.value.message
        assert await smtp.send_email(email(3)) == "<m3@cjo>"
        await smtp.close()
    [received] = sink.received
    assert received["Message-ID"] == "<m3@cjo>"
    assert sink.envelopes == [("no-reply@cjo.localhost", ["user3@example.com"])]
    assert sink.hellos == 1


async def test_lines_starting_with_a_dot_arrive_intact() -> None:
    sink = CountingSink()
    text = ".\n..two\n.three\nlast ."
    with relay(sink) as port:
        smtp = provider(port)
        await smtp.send_email(email(1, text=text))
        await smtp.close()
    [received] = sink.received
    body = received.get_body(("plain",))
    assert body is not None
    # The last line break belongs to the MIME boundary that follows the part.
    assert body.get_content().replace("\r\n", "\n") == text


@asynccontextmanager
async def pipelining_only_server(received: list[bytes]) -> AsyncIterator[int]:
    """Offers PIPELINING and answers MAIL FROM, RCPT TO and DATA only once all three came."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 strict ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-strict\r\n250 PIPELINING\r\n")
            elif verb == b"MAIL":
                rcpt, data = await reader.readline(), await reader.readline()
                assert rcpt.upper().startswith(b"RCPT") and data.upper() == b"DATA\r\n"
                writer.write(b"250 ok\r\n250 ok\r\n354 go on\r\n")
                message = b""
                while (chunk := await reader.readline()) != b".\r\n":
                    message += chunk
                received.append(message)
                writer.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"502 no\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_commands_are_pipelined_where_the_server_offers_it() -> None:
    received: list[bytes] = []
    async with pipelining_only_server(received) as port:
        smtp = provider(port, connections=2)
        # A client waiting for the MAIL reply before RCPT would time out here (3 s).
        ids = await asyncio.gather(*(smtp.send_email(email(n)) for n in range(5)))
        await smtp.close()
    assert ids == [f"<m{n}@cjo>" for n in range(5)]
    assert len(received) == 5 and all(b"Message-ID: <m" in m for m in received)

