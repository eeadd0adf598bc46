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
