"""Signals between the replicas of a service: "something changed, look now" (new messages in
the queue, a new inbox message for a profile), so a replica other than the writer reacts within
milliseconds instead of at its next poll.

A use-case sends a signal from its transaction: :meth:`Signals.send` ``(uow, name, payload)``.
Nothing is sent unless (and until) the transaction commits. Then, on PostgreSQL, it is
``pg_notify(channel, payload)`` in a short transaction of its own on a pooled connection, never
in the use-case's transaction: a NOTIFY takes PostgreSQL's database-wide notification lock at
commit, which would serialise every commit that signals (of every service on that PostgreSQL)
behind each other. Signals sent while another thread of the process is notifying are sent by
that thread, in one statement after its own, identical ones once (coalesced: no timer, no
extra wait when idle). Every process holds one LISTEN connection (psycopg 3, async),
reconnecting with backoff, and hands each notification to the handlers registered with
:meth:`Signals.on`. In the process that sent it, the handlers run right after the commit (the
echo that comes back through LISTEN is skipped). On SQLite (one process) that in-process
dispatch is all there is. A NOTIFY that fails after the commit is logged; the pollers cover it.

Signals are wake-ups, not messages: a handler looks in the database for what is new. A
notification can be lost (the listening connection broke; a process started after it was
sent), so pollers keep polling as the safety net, and after every (re)connection each handler
is called with ``None``: "you may have missed something, look at everything".

Channel names include the database schema: services (and tests) sharing one PostgreSQL
database in different schemas never hear each other.

``run()`` must be running (a background task of the service) for handlers to be called; they
run on its event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable
from functools import partial

from sqlalchemy import text

from cjo_platform.db.engine import Database
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.logging import get_logger

log = get_logger(__name__)

# Called with the payload, or None after a (re)connection: anything may have been missed.
Handler = Callable[[str | None], None]

_MAX_CHANNEL = 63  # PostgreSQL identifiers (NAMEDATALEN - 1 bytes)
# Several signals in one round trip and one short transaction.
_NOTIFY = text("SELECT pg_notify(c, p) FROM unnest(CAST(:channels AS text[]), "
               "CAST(:payloads AS text[])) AS s(c, p)")


def channel_name(schema: str | None, name: str) -> str:
    """The PostgreSQL channel of signal ``name`` in ``schema``: ``cjo.<schema>.<name>``, or a
    digest of it when that is longer than an identifier may be."""
    full = f"cjo.{schema or 'public'}.{name}"
    if len(full.encode()) <= _MAX_CHANNEL:
        return full
    return "cjo." + hashlib.sha256(full.encode()).hexdigest()[:40]


class Signals:
    """One service process's signals (see the module docstring)."""

    def __init__(self, db: Database, *, health_seconds: float = 5.0,
                 max_backoff: float = 30.0) -> None:
        self.db = db
        self.health_seconds = health_seconds
        self.max_backoff = max_backoff
        # Tells this process's notifications from other processes' when LISTEN echoes them.
        self.origin = uuid.uuid4().hex[:16]
        self._handlers: dict[str, list[Handler]] = defaultdict(list)
        self._channels: dict[str, str] = {}  # PostgreSQL channel -> signal name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening_to: set[str] = set()
        # Set while the LISTEN connection is up (always set on SQLite once running).
        self.listening = asyncio.Event()
        # Notifications waiting for the thread that is sending (ordered, without repeats).
        self._pending: dict[tuple[str, str], None] = {}
        self._sending = False
        self._lock = threading.Lock()

    def channel(self, name: str) -> str:
        return channel_name(self.db.schema, name)

    def on(self, name: str, handler: Handler) -> None:
        """Call ``handler`` on every signal ``name``, from this process or another one."""
        self._handlers[name].append(handler)
        self._channels[self.channel(name)] = name

    def send(self, uow: UnitOfWork, name: str, payload: str = "") -> None:
        """Signal ``name`` once ``uow`` commits (never when it rolls back), after the commit
        and outside its transaction. ``payload`` is short text (PostgreSQL takes up to 8,000
        bytes); identical signals sent close together may arrive once."""
        uow.after_commit(partial(self._committed, name, payload))

    def _committed(self, name: str, payload: str) -> None:
        self._dispatch(name, payload)
        if not self.db.is_sqlite:
            self._notify(self.channel(name), f"{self.origin}:{payload}")

    def _notify(self, channel: str, payload: str) -> None:
        """NOTIFY other processes; when another thread is notifying, leave it to that one."""
        with self._lock:
            self._pending[(channel, payload)] = None
            if self._sending:
                return
            self._sending = True
        while True:
            with self._lock:
                batch = list(self._pending)
                self._pending.clear()
                if not batch:
                    self._sending = False
                    return
            try:
                with self.db.engine.begin() as conn:
                    conn.execute(_NOTIFY, {"channels": [c for c, _ in batch],
                                           "payloads": [p for _, p in batch]})
            except Exception as exc:  # the pollers are the safety net
                log.warning("sending signals failed", error=repr(exc), count=len(batch))

    def _dispatch(self, name: str, payload: str | None) -> None:
        """Hand a signal to this process's handlers, from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, name, payload)

    def _deliver(self, name: str, payload: str | None) -> None:
        for handler in self._handlers.get(name, ()):
            try:
                handler(payload)
            except Exception:
                log.exception("a signal handler failed", signal=name)

    def _deliver_all(self) -> None:
        for name in list(self._handlers):
            self._deliver(name, None)

    async def run(self) -> None:
        """Dispatch signals until cancelled: on PostgreSQL, LISTEN (reconnecting with backoff)."""
        self._loop = asyncio.get_running_loop()
        if self.db.is_sqlite:
            self.listening.set()
            await asyncio.Event().wait()  # in-process dispatch only; nothing to listen to
        backoff = 0.1
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                log.warning("listening for signals failed; reconnecting", error=repr(exc),
                            retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = 0.1

    async def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        url = self.db.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        # Named, so operators (and tests) can tell the listening connection in pg_stat_activity.
        async with await psycopg.AsyncConnection.connect(
                conninfo, autocommit=True, application_name=f"cjo-signals-{self.origin}") as conn:
            self._listening_to = set()
            while True:
                for channel in sorted(set(self._channels) - self._listening_to):
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._listening_to.add(channel)
                if not self.listening.is_set():
                    self.listening.set()
                    # Whatever was signalled while nobody listened: let every handler look.
                    self._deliver_all()
                async for notify in conn.notifies(timeout=self.health_seconds):
                    self._received(notify.channel, notify.payload)
                # Quiet for a while: make sure the connection is still alive (a dead one would
                # wait for notifications for ever), then pick up channels registered since.
                await conn.execute("SELECT 1")

    def _received(self, channel: str, raw: str) -> None:
        name = self._channels.get(channel)
        if name is None:
            return
        origin, _, payload = raw.partition(":")
        if origin == self.origin:
            return  # dispatched in this process right after its commit
        self._deliver(name, payload)
