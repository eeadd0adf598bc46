"""Publishing to JetStream with a PubAck to wait for, lighter than nats-py's ``publish_async``.

``JetStreamContext.publish_async`` takes a semaphore, a NUID and random token bytes per message
and builds a ``PubAck`` from the JSON of every answer: ~29 us of CPU per message on the 2-core
development machine, against ~16 us here, where each publish carries a reply subject of one
inbox per connection (a counter tells the answers apart) and an answer is parsed only when it
reports an error. What a PubAck means is unchanged: the stream stored the message (or already
held its ``Nats-Msg-Id``, which is as good).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import APIError, NoStreamResponseError

_STATUS = "Status"
_NO_RESPONDERS = "503"


class PubAcks:
    """Publishes on ``nc``; each publish's future is done once JetStream answered it."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = nc.new_inbox() + "."
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self._prefix + "*", cb=self._answer)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str],
                      ) -> asyncio.Future[None]:
        """Send the message; the future holds JetStream's answer: ``None`` once stored, the
        error otherwise. Cancelling it forgets the answer."""
        token = str(next(self._tokens))
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = answer
        answer.add_done_callback(lambda _: self._waiting.pop(token, None))
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
        except BaseException:
            answer.cancel()
            raise
        return answer

    async def _answer(self, msg: Msg) -> None:
        answer = self._waiting.pop(msg.subject[len(self._prefix):], None)
        if answer is None or answer.done():
            return
        if msg.headers and msg.headers.get(_STATUS) == _NO_RESPONDERS:
            answer.set_exception(NoStreamResponseError())  # no stream holds the subject
        elif b'"error"' in msg.data and (error := _error(msg.data)) is not None:
            answer.set_exception(error)
        else:
            answer.set_result(None)


def _error(data: bytes) -> Exception | None:
    try:
        reply: Any = json.loads(data)
    except ValueError:
        return APIError(description=f"unreadable PubAck {data[:200]!r}")
    error = reply.get("error") if isinstance(reply, dict) else None
    if error is None:
        return None
    if not isinstance(error, dict) or "code" not in error:
        return APIError(description=repr(error))
    try:
        APIError.from_error(error)  # raises the error's own class
    except APIError as exc:
        return exc
    return APIError(description=repr(error))
