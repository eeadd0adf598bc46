"""A real HTTP server on loopback that plays a provider: it records every request and answers
from a script (then with the default answer), like Twilio, FCM or a webhook receiver would."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class HttpSink:
    default: Callable[[Request], Answer] = lambda request: Answer(200, {"id": "ok"})
    script: list[Answer] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, request: Request) -> Answer:
        with self.lock:
            self.requests.append(request)
            if self.script:
                return self.script.pop(0)
        return self.default(request)

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


@contextmanager
def http_sink(sink: HttpSink) -> Iterator[HttpSink]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out in two writes: with Nagle's algorithm the body waits
        # for the client's delayed ACK of the headers (40 ms on Linux), which capped a
        # keep-alive connection at ~25 requests/s and the delivery benchmark at concurrency/40ms.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            request = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                              body)
            answer = sink.answer(request)
            data = b"" if answer.body is None else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


def twilio_error(status: int, code: int, message: str) -> Answer:
    return Answer(status, {"code": code, "message": message,
                           "more_info": f"https://www.twilio.com/docs/errors/{code}",
                           "status": status})


def twilio_ok(request: Request) -> Answer:
    return Answer(201, {"sid": f"SM{len(request.body):032d}", "status": "queued"})


def fcm_error(status: int, grpc_status: str, error_code: str) -> Answer:
    return Answer(status, {"error": {"code": status, "message": f"{error_code} happened",
                                     "status": grpc_status, "details": [{
                                         "@type": "type.googleapis.com/google.firebase.fcm.v1"
                                                  ".FcmError", "errorCode": error_code}]}})


async def read_request_body(reader: asyncio.StreamReader) -> bytes:
    """Read one HTTP/1.1 request from a keep-alive connection and return its body: for raw
    asyncio servers where ThreadingHTTPServer would be the bottleneck (benchmarks, many
    connections). Raises IncompleteReadError when the client closes the connection."""
    length = 0
    await reader.readuntil(b"\r\n")  # the request line
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


class CountingSink(asyncio.Protocol):
    """A keep-alive HTTP/1.1 server protocol answering every request 200 {"id": "sink-<n>"}
    and adding one to ``count.value`` per request (its process the only writer): a fraction
    of the CPU of a StreamReader server reading line by line, so a benchmark's sink is not
    the limit of the client it measures. Requests carry a Content-Length (no chunked bodies),
    as every provider request of delivery does; pipelined requests are answered in order."""

    def __init__(self, count: Any) -> None:
        self.count = count
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        answers = []
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end].lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop >= 0 else len(head)])
            if len(buffer) < end + 4 + length:
                break
            buffer = buffer[end + 4 + length:]
            self.count.value += 1
            body = b'{"id":"sink-%d"}' % self.count.value
            answers.append(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.buffer = buffer
        if answers and self.transport is not None:
            self.transport.write(b"".join(answers))


def serve_counting_sink(port: int, count: Any) -> None:
    """Run a :class:`CountingSink` server on ``port`` until the process is stopped."""
    # A multiprocessing.Value's own ctypes value: its wrapper takes the lock on every get and
    # set, and this process is the only writer (a 64-bit store is read whole elsewhere).
    raw = count.get_obj() if hasattr(count, "get_obj") else count

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            lambda: CountingSink(raw), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())
