"""The SMTP provider against real SMTP servers on loopback: connection reuse, PIPELINING, RSET
after a refusal, dot-stuffing, internationalised addresses with and without SMTPUTF8. aiosmtpd
plays the relay; one test uses a small hand-written server that answers only pipelined command
groups, so a client that waits for each reply hangs there (and times out) instead of passing."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiosmtpd.controller import Controller
from delivery_support import SmtpSink, delivery_app, self_signed, send_request

from cjo.common.v1 import common_pb2
from cjo.delivery.v1 import delivery_service_pb2 as pb
from cjo.delivery.v1 import delivery_service_pb2_grpc as pb_grpc
from cjo.delivery.v1 import message_pb2, provider_pb2
from cjo_delivery.adapters.smtp import SmtpProvider, SmtpSettings
from cjo_delivery.domain.sending import OutgoingEmail, ProviderError
from cjo_platform.clock import ManualClock
from cjo_platform.rpc.status import field_violations
from support import Backend, as_service, eventually, free_port, serving


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


class RawSink(CountingSink):
    """Also keeps each message's MAIL FROM parameters and its bytes as they arrived."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mail_options: list[list[str]] = []
        self.raw: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.mail_options.append(list(envelope.mail_options))
            self.raw.append(envelope.content)
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def relay(sink: SmtpSink, **options: Any) -> Iterator[int]:
    """aiosmtpd on a free port; ``options`` are its SMTP's (its Controller offers SMTPUTF8
    unless ``enable_SMTPUTF8=False``)."""
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def email(n: int, to: str = "", text: str = "Hello Ada") -> OutgoingEmail:
    return OutgoingEmail(message_id=f"m{n}", to=to or f"user{n}@example.com",
                         subject=f"Order {n}", preheader="", html=f"<p>Order {n}</p>",
                         text=text)


def provider(port: int, connections: int = 4,
             sender: str = "cjo <no-reply@cjo.localhost>") -> SmtpProvider:
    return SmtpProvider(SmtpSettings(port=port, connections=connections, timeout_seconds=3,
                                     sender=sender, allow_private=True), ManualClock())


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
async def listening(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                     Awaitable[None]]) -> AsyncIterator[int]:
    """A hand-written relay (``handle`` serves one connection) on a free port."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@asynccontextmanager
async def pipelining_only_server(received: list[bytes], pause: float = 0.0
                                 ) -> AsyncIterator[int]:
    """Offers PIPELINING and answers MAIL FROM, RCPT TO and DATA only once all three came
    (``pause`` seconds before each of those three replies)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 strict ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-strict\r\n250 PIPELINING\r\n")
            elif verb == b"MAIL":
                rcpt, data = await reader.readline(), await reader.readline()
                assert rcpt.upper().startswith(b"RCPT") and data.upper() == b"DATA\r\n"
                for reply in (b"250 ok\r\n", b"250 ok\r\n", b"354 go on\r\n"):
                    await asyncio.sleep(pause)
                    writer.write(reply)
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

    async with listening(handle) as port:
        yield port


async def test_commands_are_pipelined_where_the_server_offers_it() -> None:
    received: list[bytes] = []
    async with pipelining_only_server(received) as port:
        smtp = provider(port, connections=2)
        # A client waiting for the MAIL reply before RCPT would time out here (3 s).
        ids = await asyncio.gather(*(smtp.send_email(email(n)) for n in range(5)))
        await smtp.close()
    assert ids == [f"<m{n}@cjo>" for n in range(5)]
    assert len(received) == 5 and all(b"Message-ID: <m" in m for m in received)


async def test_the_replies_of_one_pipelined_round_trip_share_one_timeout() -> None:
    received: list[bytes] = []
    # Each reply comes within the timeout (3 s) of the one before; all three take 4.5 s.
    async with pipelining_only_server(received, pause=1.5) as port:
        smtp = provider(port)
        with pytest.raises(ProviderError) as timed_out:
            await smtp.send_email(email(1))
        await smtp.close()
    assert timed_out.value.transient and timed_out.value.message.endswith("timed out")
    assert received == []



@pytest.mark.parametrize("pipelining", [False, True])
async def test_a_non_ascii_local_part_goes_over_smtputf8_intact(pipelining: bool) -> None:
    sink = RawSink(pipelining=pipelining)
    with relay(sink) as port:
        smtp = provider(port, connections=1)
        assert await smtp.send_email(email(1, to="jörg@bücher.example")) == "<m1@cjo>"
        assert await smtp.send_email(email(2, to="ada@example.com")) == "<m2@cjo>"
        await smtp.close()
    # The local part as it is, the domain as its A-label (no relay's IDNA to trust).
    assert [to for _, [to] in sink.envelopes] == ["jörg@xn--bcher-kva.example",
                                                  "ada@example.com"]
    # SMTPUTF8 only where it is needed; the UTF-8 headers are declared 8-bit (aiosmtpd offers
    # 8BITMIME).
    assert sink.mail_options == [["SMTPUTF8", "BODY=8BITMIME"], []]
    utf8, plain = sink.raw
    assert b"\r\nTo: j\xc3\xb6rg@xn--bcher-kva.example\r\n" in utf8  # RFC 6532, no =?utf-8?
    assert sink.received[0]["To"] == "jörg@xn--bcher-kva.example"
    body = sink.received[0].get_body(("plain",))
    assert body is not None and body.get_content().rstrip() == "Hello Ada"
    assert plain.isascii()


async def test_without_smtputf8_a_domain_is_sent_as_its_a_label_and_a_local_part_fails_for_good(
        ) -> None:
    sink = RawSink()
    with relay(sink, enable_SMTPUTF8=False) as port:
        smtp = provider(port, connections=1)
        results = await asyncio.gather(
            smtp.send_email(email(1, to="someone@bücher.example")),
            smtp.send_email(email(2, to="jörg@bücher.example")),
            smtp.send_email(email(3, to="ada@example.com")), return_exceptions=True)
        await smtp.close()
    delivered, refused, plain = results
    assert (delivered, plain) == ("<m1@cjo>", "<m3@cjo>")
    assert isinstance(refused, ProviderError)
    assert not refused.transient and not refused.bounce  # not the mailbox's fault: no suppression
    assert "does not offer SMTPUTF8" in refused.message
    assert "jörg@xn--bcher-kva.example" in refused.message
    assert [to for _, [to] in sink.envelopes] == ["someone@xn--bcher-kva.example",
                                                  "ada@example.com"]
    assert [m["To"] for m in sink.received] == ["someone@xn--bcher-kva.example",
                                                "ada@example.com"]
    assert all(raw.isascii() for raw in sink.raw) and sink.mail_options == [[], []]
    assert sink.hellos == 1  # the refused message cost the connection nothing


async def test_the_from_address_follows_the_same_rules() -> None:
    plain_server, utf8_server = RawSink(), RawSink()
    with relay(plain_server, enable_SMTPUTF8=False) as port:
        smtp = provider(port, sender="Bücher & Co <news@bücher.example>")
        await smtp.send_email(email(1))
        # A non-ASCII local part in the From can never reach this server: every message fails.
        smtp_utf8 = provider(port, sender="Jörg <jörg@bücher.example>")
        with pytest.raises(ProviderError) as refused:
            await smtp_utf8.send_email(email(2))
        await smtp.close()
        await smtp_utf8.close()
    assert not refused.value.transient and "jörg@xn--bcher-kva.example" in refused.value.message
    assert plain_server.envelopes == [("news@xn--bcher-kva.example", ["user1@example.com"])]
    [received] = plain_server.received
    assert received["From"].addresses[0].display_name == "Bücher & Co"
    assert received["From"].addresses[0].addr_spec == "news@xn--bcher-kva.example"
    with relay(utf8_server) as port:
        smtp_utf8 = provider(port, sender="Jörg <jörg@bücher.example>")
        await smtp_utf8.send_email(email(3))
        await smtp_utf8.close()
    assert utf8_server.envelopes == [("jörg@xn--bcher-kva.example", ["user3@example.com"])]
    assert utf8_server.received[0]["From"] == "Jörg <jörg@xn--bcher-kva.example>"
    assert utf8_server.mail_options == [["SMTPUTF8", "BODY=8BITMIME"]]


async def test_the_service_takes_internationalised_addresses_and_refuses_malformed_ones(
        sqlite_backend: Backend) -> None:
    ws = as_service("ws-a")
    sink = SmtpSink()
    with relay(sink, enable_SMTPUTF8=False) as port:
        app = delivery_app(sqlite_backend, port, ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                send_request("i1", "jörg@bücher.example"),
                send_request("i2", "someone@bücher.example"),
                send_request("i3", "ada@example.com"),
                send_request("i4", "jörg@bücher..example"),
                send_request("i5", "jörg\u200b@bücher.example"),  # an invisible character
                send_request("i6", "jörg@b_cher.example"),
            ]), metadata=ws)
            assert [r.status.code for r in reply.results] == [0, 0, 0, 3, 3, 3]
            for index in (3, 4, 5):
                assert field_violations(reply.results[index].status) == {
                    f"requests[{index}].recipient.address": "is not a valid email address"}

            async def outcome(name: str) -> message_pb2.Message | None:
                message = (await stub.GetMessage(pb.GetMessageRequest(name=name),
                                                 metadata=ws)).message
                final = (message_pb2.MESSAGE_STATUS_SENT, message_pb2.MESSAGE_STATUS_FAILED)
                return message if message.status in final else None

            failed, sent, plain = [await eventually(lambda r=r: outcome(r.message.name))
                                   for r in reply.results[:3]]
    assert isinstance(failed, message_pb2.Message)
    assert failed.status == message_pb2.MESSAGE_STATUS_FAILED
    assert failed.attempts == 1 and "does not offer SMTPUTF8" in failed.error
    assert isinstance(sent, message_pb2.Message) and isinstance(plain, message_pb2.Message)
    assert [m.status for m in (sent, plain)] == [message_pb2.MESSAGE_STATUS_SENT] * 2
    assert sorted(to for _, [to] in sink.envelopes) == ["ada@example.com",
                                                        "someone@xn--bcher-kva.example"]


async def test_a_provider_without_smtputf8_hands_the_message_to_the_next_that_has_it(
        backend: Backend) -> None:
    """The workspace's first email provider cannot carry a non-ASCII local part; its second
    can. Such messages go through the second and plain ones stay with the first: more refusals
    than the circuit breaker tolerates failures (5) do not count against the first's health."""
    ws = as_service("ws-a")
    plain_sink, utf8_sink = SmtpSink(), SmtpSink()
    with relay(plain_sink, enable_SMTPUTF8=False) as plain_port, relay(utf8_sink) as utf8_port:
        app = delivery_app(backend, free_port(), ManualClock())
        async with serving(app) as address, grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.DeliveryServiceStub(ch)
            for priority, port in ((1, plain_port), (2, utf8_port)):
                await stub.CreateProvider(pb.CreateProviderRequest(
                    provider=provider_pb2.Provider(
                        channel=common_pb2.CHANNEL_EMAIL, kind=provider_pb2.PROVIDER_KIND_SMTP,
                        priority=priority, config={"host": "127.0.0.1", "port": str(port),
                                                   "from": "cjo <news@cjo.test>"})),
                    metadata=ws)

            async def sent(name: str) -> message_pb2.Message | None:
                message = (await stub.GetMessage(pb.GetMessageRequest(name=name),
                                                 metadata=ws)).message
                return message if message.status == message_pb2.MESSAGE_STATUS_SENT else None

            async def send_all(key: str, addresses: list[str]) -> None:
                reply = await stub.BatchSendMessages(pb.BatchSendMessagesRequest(requests=[
                    send_request(f"{key}{n}", to) for n, to in enumerate(addresses)]),
                    metadata=ws)
                for result in reply.results:
                    await eventually(lambda r=result: sent(r.message.name))

            international = [f"jörg{n}@bücher.example" for n in range(6)]
            await send_all("intl", international)
            await send_all("plain", ["ada@example.com", "bob@example.com"])
    # On the wire the domain is its A-label, SMTPUTF8 or not (domain/addresses.py says why).
    assert sorted(to for _, [to] in utf8_sink.envelopes) == [
        f"jörg{n}@xn--bcher-kva.example" for n in range(6)]
    assert sorted(to for _, [to] in plain_sink.envelopes) == ["ada@example.com",
                                                              "bob@example.com"]


def fragmenting_server(received: list[bytes], *, drop_after_mail: int = 0,
                       endless_reply: bool = False) -> AbstractAsyncContextManager[int]:
    """A relay writing every reply a few bytes at a time (a multi-line EHLO reply split inside
    and across its lines). The first ``drop_after_mail`` connections close after MAIL FROM;
    ``endless_reply``: MAIL FROM is answered with an unending line."""
    canned = {b"EHLO": b"250-slow\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n",
              b"MAIL": b"250 " + b"x" * 70_000 if endless_reply else b"250 2.1.0 ok\r\n",
              b"RCPT": b"250 2.1.5 ok\r\n", b"DATA": b"354 go on\r\n", b"QUIT": b"221 bye\r\n"}
    connections = 0

    async def say(writer: asyncio.StreamWriter, reply: bytes) -> None:
        step = 3 if len(reply) < 1000 else len(reply)
        for start in range(0, len(reply), step):
            writer.write(reply[start:start + step])
            await writer.drain()
            await asyncio.sleep(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        drop = connections <= drop_after_mail
        await say(writer, b"220 slow ESMTP\r\n")
        while (verb := (await reader.readline())[:4].upper()) and not (drop and verb == b"MAIL"):
            await say(writer, canned.get(verb, b"502 no\r\n"))
            if verb == b"DATA":
                message = b""
                while (chunk := await reader.readline()) not in (b".\r\n", b""):
                    message += chunk
                received.append(message)
                await say(writer, b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                break
        writer.close()

    return listening(handle)


async def test_replies_that_arrive_in_pieces_are_read_whole() -> None:
    received: list[bytes] = []
    async with fragmenting_server(received) as port:
        smtp = provider(port, connections=1)
        assert await smtp.send_email(email(1)) == "<m1@cjo>"
        assert await smtp.send_email(email(2)) == "<m2@cjo>"
        await smtp.close()
    assert [b"Message-ID: <m1@cjo>" in m for m in received] == [True, False]
    assert b"Message-ID: <m2@cjo>" in received[1]


async def test_a_connection_the_server_closes_mid_transaction_fails_the_message_for_now(
) -> None:
    received: list[bytes] = []
    async with fragmenting_server(received, drop_after_mail=1) as port:
        smtp = provider(port, connections=1)
        with pytest.raises(ProviderError) as dropped:
            await smtp.send_email(email(1))
        assert dropped.value.transient and "connection closed" in dropped.value.message
        # The broken connection is not reused: the next message opens another and goes.
        assert await smtp.send_email(email(2)) == "<m2@cjo>"
        await smtp.close()
    assert len(received) == 1 and b"Message-ID: <m2@cjo>" in received[0]


async def test_a_reply_line_without_end_fails_the_message_for_now_instead_of_filling_memory(
) -> None:
    async with fragmenting_server([], endless_reply=True) as port:
        smtp = provider(port, connections=1)
        with pytest.raises(ProviderError) as refused:
            await smtp.send_email(email(1))
        await smtp.close()
    assert refused.value.transient and "reply line too long" in refused.value.message


async def test_a_relay_talking_to_an_idle_connection_is_not_buffered_without_bound() -> None:
    """Lines nobody asked for are read no further than about twice the line limit (the relay
    is then held back by TCP), and the connection holding them is not used again (review
    rsmtp: a relay writing to a pooled connection made the client hold 100 MB and more)."""
    flood = asyncio.Event()
    done = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(b"220 relay\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250 relay\r\n")
            elif verb in (b"MAIL", b"RCPT"):
                writer.write(b"250 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go\r\n")
                while (await reader.readline()) != b".\r\n":
                    pass
                writer.write(b"250 queued\r\n")
                if len(writers) == 1:
                    await flood.wait()
                    chunk = (b"250-" + b"x" * 1020 + b"\r\n") * 64
                    for _ in range(400):  # 26 MB while the client's connection is idle
                        writer.write(chunk)
                        await writer.drain()
                    done.set()
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        smtp = provider(server.sockets[0].getsockname()[1], connections=1)
        assert await smtp.send_email(email(1)) == "<m1@cjo>"
        idle = smtp._idle[0]
        flood.set()
        # Either the relay wrote it all (the client read it) or TCP holds it back (the
        # client stopped reading and the relay's own buffer fills).
        await eventually(lambda: done.is_set()
                         or writers[0].transport.get_write_buffer_size() > 0, timeout=30)
        buffered = sum(map(len, idle.replies_in.lines)) + len(idle.replies_in.partial)
        assert buffered <= 256 * 1024, f"{buffered / 1e6:.1f} MB buffered"
        # The next email does not read the stray lines as its replies: a new connection.
        assert await smtp.send_email(email(2)) == "<m2@cjo>"
        assert len(writers) == 2
        await smtp.close()
        for writer in writers:
            writer.transport.abort()


async def test_replies_sent_in_plaintext_after_starttls_are_not_read_inside_tls(
        tmp_path: Path) -> None:
    """Bytes a man in the middle adds after the 220 to STARTTLS are not taken as the replies
    to the commands sent inside TLS (RFC 3207 section 6; review rsmtp: a recipient refused
    with 550 was counted as sent)."""
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    refused: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        secure = False
        writer.write(b"220 relay\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250 relay\r\n" if secure else b"250-relay\r\n250 STARTTLS\r\n")
            elif verb == b"STAR":
                writer.write(b"220 go\r\n250 e\r\n250 m\r\n250 r\r\n354 d\r\n250 queued\r\n")
                await writer.drain()
                await writer.start_tls(server_tls)
                secure = True
                continue
            elif verb == b"MAIL":
                writer.write(b"250 ok\r\n")
            elif verb == b"RCPT":
                refused.append(line)
                writer.write(b"550 5.1.1 no such user\r\n")
            else:
                writer.write(b"503 bad sequence\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        smtp = SmtpProvider(SmtpSettings(
            port=server.sockets[0].getsockname()[1], connections=1, timeout_seconds=3,
            starttls=True, tls_context=ssl.create_default_context(cafile=str(cert)),
            allow_private=True),
            ManualClock())
        with pytest.raises(ProviderError) as failed:
            await smtp.send_email(email(1))
        await smtp.close()
    assert failed.value.transient and "after the reply to STARTTLS" in failed.value.message
    assert refused == []  # nothing was sent inside TLS on that connection


class ScanningSink(CountingSink):
    """Answers the end of the content only after ``scan`` seconds, as a relay that scans
    content for spam and viruses before it answers does."""

    def __init__(self, scan: float) -> None:
        super().__init__()
        self.scan = scan

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.scan)
        return await super().handle_DATA(server, session, envelope)


async def test_the_reply_to_the_content_has_its_own_longer_timeout() -> None:
    """A relay that takes longer than the command timeout to answer the content has taken the
    message: timed out there, the message was retried and arrived twice."""
    sink = ScanningSink(scan=0.9)
    with relay(sink) as port:
        smtp = SmtpProvider(SmtpSettings(port=port, connections=1, timeout_seconds=0.3,
                                         data_timeout_seconds=30, allow_private=True),
                            ManualClock())
        assert await smtp.send_email(email(1)) == "<m1@cjo>"
        await smtp.close()
    assert [m["Message-ID"] for m in sink.received] == ["<m1@cjo>"]


async def test_the_content_reply_times_out_after_the_data_timeout() -> None:
    sink = ScanningSink(scan=5)
    with relay(sink) as port:
        smtp = SmtpProvider(SmtpSettings(port=port, connections=1, timeout_seconds=5,
                                         data_timeout_seconds=0.3, allow_private=True),
                            ManualClock())
        with pytest.raises(ProviderError) as timed_out:
            await smtp.send_email(email(1))
        await smtp.close()
    assert timed_out.value.transient and timed_out.value.message.endswith("timed out")


# Review rlease: a send cut off while it QUIT a stale pooled connection to a relay that stopped
# answering left the socket open (and each stale connection could hold the send a timeout).
async def test_a_stale_pooled_connection_is_closed_even_when_the_send_is_cut_off() -> None:
    answering = True

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        while line := await reader.readline():
            if line.startswith(b"QUIT") or not answering:
                continue  # a relay that stopped answering
            if line.startswith(b"EHLO"):
                writer.write(b"250-hi\r\n250 PIPELINING\r\n")
            elif line.startswith(b"DATA"):
                writer.write(b"354 go\r\n")
            elif line == b".\r\n" or line.startswith((b"MAIL", b"RCPT")):
                writer.write(b"250 ok\r\n")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    smtp = SmtpProvider(SmtpSettings(port=port, connections=1, timeout_seconds=5,
                                     allow_private=True), ManualClock())
    mail = OutgoingEmail(message_id="m1", to="a@example.com", subject="s", preheader="",
                         html="<p>x</p>", text="x")
    try:
        await smtp.send_email(mail)
        [stale] = smtp._idle
        stale.idle_since = time.monotonic() - 60  # older than _MAX_IDLE_SECONDS
        answering = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):  # the cut-off at calls_end
                await smtp.send_email(mail)
        assert stale not in smtp._idle
        assert stale.closed, "the stale connection's socket was left open"
    finally:
        await smtp.close()
        server.close()
        await server.wait_closed()
