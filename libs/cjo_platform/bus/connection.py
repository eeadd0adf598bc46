"""The bus's settings and its one NATS connection per process.

Streams, their partition consumers and the claims bucket are created idempotently the first
time a relay or a consumer needs them (a JetStream ``add`` with the same configuration is a
no-op; one whose configuration changed is updated), so no deployment step has to run first and
a service whose bus is down still starts: its outbox keeps the rows until the bus answers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError
from nats.js.kv import KeyValue

from cjo_platform.bus import naming
from cjo_platform.bus.packing import MAX_PACK_ROWS
from cjo_platform.bus.pubacks import PubAcks
from cjo_platform.config import Env
from cjo_platform.logging import get_logger

log = get_logger(__name__)

# What a claim keeps beyond the ack wait after its holder's last fetch (network latency, the
# server's clocks, a pull request's expiry rounded up): a claim lasts 2 x (ack_wait + this), and
# its holder fetches nothing for the last ack_wait + this of it (BusSettings.fence_seconds).
CLAIM_MARGIN_SECONDS = 5.0

_PREFIX = re.compile(r"[a-z0-9_-]{1,32}")

# How a stream records the CJO_BUS_PARTITIONS it was made with (its description: stream
# metadata needs NATS 2.10).
_PARTITIONS = re.compile(r", (\d+) partitions$")

DEFAULT_MAX_BYTES = 1024 ** 3
"""A stream's default cap (1 GiB): the six topics' streams at most 6 GiB, within the
jetstream overlay's ``max_file_store`` (9 GiB) with room for the claims bucket."""


class BusSettingMismatch(RuntimeError):
    """A stream was made with another CJO_BUS_PARTITIONS than this process's: its producers
    and consumers would not agree on where a profile's messages go."""


@dataclass(frozen=True)
class BusSettings:
    # CJO_EVENT_BUS: the NATS server(s), comma separated (nats://host:4222).
    url: str
    # CJO_BUS_PREFIX: the first subject token and the stream names' prefix (one deployment's
    # streams apart from another's on a shared server).
    prefix: str = "cjo"
    # CJO_BUS_PARTITIONS: partitions per topic, each with its own consumer; the most receiver
    # replicas that work a topic at once. Recorded on each stream when it is made: a process
    # with another value refuses the stream (BusSettingMismatch). Change it only on drained
    # streams, removed first (docs/operations.md).
    partitions: int = 8
    # CJO_BUS_ACK_WAIT_SECONDS: how long a message a consumer took may go unanswered before
    # JetStream gives it to the partition's next holder (a replica killed mid-batch).
    ack_wait_seconds: float = 30.0
    # CJO_BUS_BATCH: messages one consumer takes at once (also its max_ack_pending).
    batch: int = 500
    # CJO_BUS_MAX_ATTEMPTS: refusals of one message before it goes to the dead letters (a
    # receiver that is down or busy is waited for, never counted).
    max_attempts: int = 5
    # CJO_BUS_DUPLICATE_WINDOW_SECONDS: how long JetStream remembers a Nats-Msg-Id.
    duplicate_window_seconds: float = 120.0
    # CJO_BUS_MAX_AGE_HOURS: how long a stream keeps a message no consumer acknowledged (a
    # receiver that never came): past it the message is gone, so alert long before.
    max_age_hours: float = 24 * 7
    # CJO_BUS_MAX_BYTES: the most bytes one stream (topic) holds. A full stream refuses new
    # messages (discard NEW): the relay keeps the rows in the outbox and retries that topic,
    # nothing is lost, and one stalled receiver never fills the server's store for the others.
    max_bytes: int = DEFAULT_MAX_BYTES
    # CJO_BUS_REPLICAS: JetStream replicas of each stream (3 on a three-node cluster).
    replicas: int = 1
    # CJO_BUS_PACK_ROWS: outbox rows a relay packs into one message (a round's rows of one
    # subject, see cjo_platform.bus.packing); 1 publishes one message per row, as releases
    # before packing did and read. 1 by default in the release that first reads packs, so a
    # rolling upgrade never hands a pack to a consumer of the previous release (which would
    # bury it whole); raise it (64) once every service runs this release.
    pack_rows: int = 1

    @property
    def claim_seconds(self) -> float:
        """A partition claim's lifetime: ``2 * (ack_wait + CLAIM_MARGIN_SECONDS)``, 70 s at the
        defaults. Its holder's worker fetches nothing (and marks nothing in progress) after
        :attr:`fence_seconds` counted from the moment its last renewal was asked for, and the
        claim lapses ``claim_seconds`` after the server applied that renewal at the earliest, so
        every message the holder was handed is due again at JetStream ``CLAIM_MARGIN_SECONDS``
        before another replica may take the partition, whenever the holder is killed and
        whatever its claim rounds did: a partition whose holder died changes hands only after
        JetStream gave back the messages it held, which are then delivered first (per-profile
        order survives the change). Twice ack_wait plus the margin, so that the fence lies a
        renewal and a half after the last renewal: room for a failed round's retry (below)."""
        return 2 * (self.ack_wait_seconds + CLAIM_MARGIN_SECONDS)

    @property
    def fence_seconds(self) -> float:
        """How long after its last renewal was asked for a partition's worker may go on: it
        fetches and marks in progress only before, and stops then (its deadline). ``claim -
        ack_wait - CLAIM_MARGIN_SECONDS`` (35 s at the defaults): half the claim, a renewal
        and a half (``1.5 * renew_seconds``), so a failed round's retry (``1.2 * renew``,
        answered within :attr:`claim_round_seconds`) renews before it."""
        return self.claim_seconds - self.ack_wait_seconds - CLAIM_MARGIN_SECONDS

    @property
    def renew_seconds(self) -> float:
        """How often a holder renews its claims (and tends them): a round starts every third
        of the claim counted from the last one's start and renews first."""
        return self.claim_seconds / 3

    @property
    def claim_round_seconds(self) -> float:
        """How long a claim round may take before it counts as failed (then tried again as it
        ends, a fifth of :attr:`renew_seconds` after it began): the retry renews the claims by
        ``1.2 * renew + round`` <= ``1.4 * renew`` after the last renewal, before the workers'
        deadlines at :attr:`fence_seconds` = ``1.5 * renew``, so one slow claims request stops
        no partition (4.5 s to spare at the defaults, a tenth of a renewal at least)."""
        return min(self.renew_seconds / 5, CLAIM_MARGIN_SECONDS / 2)


def load_bus_settings(env: Env) -> BusSettings | None:
    """The bus's settings, or ``None`` when CJO_EVENT_BUS is unset (the outbox + gRPC path)."""
    url = env.str("CJO_EVENT_BUS", "")
    if not url:
        return None
    if not all(part.strip().startswith(("nats://", "tls://")) for part in url.split(",")):
        env.errors.append(f"CJO_EVENT_BUS must be nats:// or tls:// URLs, got {url!r}")
    prefix = env.str("CJO_BUS_PREFIX", "cjo")
    if not _PREFIX.fullmatch(prefix):
        env.errors.append(f"CJO_BUS_PREFIX={prefix!r} must be 1-32 of a-z, 0-9, _ and -")
    ack_wait = env.float("CJO_BUS_ACK_WAIT_SECONDS", 30.0, minimum=1.0)
    return BusSettings(
        url=url, prefix=prefix,
        partitions=env.int("CJO_BUS_PARTITIONS", 8, minimum=1, maximum=1024),
        ack_wait_seconds=ack_wait,
        batch=env.int("CJO_BUS_BATCH", 500, minimum=1, maximum=10_000),
        max_attempts=env.int("CJO_BUS_MAX_ATTEMPTS", 5, minimum=1, maximum=1000),
        duplicate_window_seconds=env.float("CJO_BUS_DUPLICATE_WINDOW_SECONDS", 120.0,
                                           minimum=1.0),
        max_age_hours=env.float("CJO_BUS_MAX_AGE_HOURS", 24 * 7, minimum=0.1),
        # At least a few of the largest messages (NATS' max_payload, 1 MiB).
        max_bytes=env.int("CJO_BUS_MAX_BYTES", DEFAULT_MAX_BYTES, minimum=8 * 1024 * 1024),
        replicas=env.int("CJO_BUS_REPLICAS", 1, minimum=1, maximum=5),
        pack_rows=env.int("CJO_BUS_PACK_ROWS", 1, minimum=1, maximum=MAX_PACK_ROWS),
    )


def load_bus(env: Env) -> Bus | None:
    settings = load_bus_settings(env)
    return Bus(settings) if settings is not None else None


class Bus:
    """One process's connection to JetStream (opened at first use, reconnecting for ever)."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock: asyncio.Lock | None = None
        self._streams: set[str] = set()
        self._claims: KeyValue | None = None
        self._pub_acks: PubAcks | None = None
        # Called once the connection is established again (see on_reconnect).
        self._reconnect_callbacks: set[Callable[[], None]] = set()

    @property
    def prefix(self) -> str:
        return self.settings.prefix

    async def jetstream(self) -> JetStreamContext:
        if self._js is not None and self._nc is not None and not self._nc.is_closed:
            return self._js
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._js is None or self._nc is None or self._nc.is_closed:
                self._nc = await nats.connect(
                    servers=[s.strip() for s in self.settings.url.split(",")],
                    name="cjo", max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                    connect_timeout=2, error_cb=_log_error, disconnected_cb=_disconnected,
                    reconnected_cb=self._reconnected)
                self._js = self._nc.jetstream(timeout=5)
                self._streams.clear()
                self._pub_acks = None
        assert self._js is not None
        return self._js

    def on_reconnect(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` each time the connection is established again (its subscriptions
        restored); returns what stops that."""
        self._reconnect_callbacks.add(callback)
        return lambda: self._reconnect_callbacks.discard(callback)

    async def _reconnected(self) -> None:
        log.info("event bus reconnected")
        for callback in list(self._reconnect_callbacks):
            callback()

    async def client(self) -> Client:
        """The connection itself (for :class:`~cjo_platform.bus.pull.PullBatches`)."""
        await self.jetstream()
        assert self._nc is not None
        return self._nc

    async def pub_acks(self) -> PubAcks:
        """The connection's publisher of messages whose PubAck is awaited."""
        await self.jetstream()
        assert self._lock is not None
        async with self._lock:
            if self._pub_acks is None or self._pub_acks.nc is not self._nc:
                assert self._nc is not None
                pub_acks = PubAcks(self._nc)
                await pub_acks.start()
                self._pub_acks = pub_acks
            return self._pub_acks

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.drain()
        self._nc = self._js = None
        self._pub_acks = None

    async def ensure_stream(self, topic: str) -> str:
        """Create (or bring up to date) the topic's stream; returns its name. Raises
        :class:`BusSettingMismatch` when the stream has other partitions than this process."""
        name = naming.stream_name(self.prefix, topic)
        if name in self._streams:
            return name
        js = await self.jetstream()
        s = self.settings
        config = StreamConfig(
            name=name, subjects=[f"{naming.subject_root(self.prefix, topic)}.>"],
            # Work queue: a message stays until its partition's consumer acknowledged it (also
            # while no consumer exists yet), then it is gone; partitions' filters never overlap.
            retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE,
            # Full (max_bytes): new messages are refused and wait in the outbox; OLD would drop
            # messages no consumer has taken yet.
            discard=DiscardPolicy.NEW, max_bytes=s.max_bytes, num_replicas=s.replicas,
            max_age=s.max_age_hours * 3600, duplicate_window=s.duplicate_window_seconds,
            description=f"cjo outbox topic {topic}, {s.partitions} partitions")
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Created before with other settings: brought up to date, unless its partitions
            # differ (the stream's producers and consumers would lose each other's messages).
            info = await js.stream_info(name)
            recorded = _PARTITIONS.search(info.config.description or "")
            if recorded is not None and int(recorded.group(1)) != s.partitions:
                raise BusSettingMismatch(
                    f"CJO_BUS_PARTITIONS={s.partitions}, but the stream {name} was made with "
                    f"{recorded.group(1)}: set the same CJO_BUS_PARTITIONS in every service of "
                    "the deployment (to change it, drain and remove the streams first, see "
                    "docs/operations.md)") from None
            held = info.state.bytes
            if held > s.max_bytes // 2:
                # The server enforces a lowered max_bytes at once by deleting the oldest
                # messages, whatever the discard policy: messages no consumer has taken yet (a
                # stream of a release without a cap, or a cap lowered, while a receiver was
                # stalled). The old cap stays until the stream has drained to half the new one
                # (the margin covers what is published between this read and the update); the
                # next start applies it.
                config.max_bytes = info.config.max_bytes
                log.warning("bus stream holds more than half of CJO_BUS_MAX_BYTES: its cap is "
                            "left as it was until it drains, so that no message is deleted",
                            stream=name, bytes=held, max_bytes=s.max_bytes,
                            kept_max_bytes=info.config.max_bytes)
            await js.update_stream(config)
        self._streams.add(name)
        return name

    async def ensure_consumer(self, topic: str, partition: int) -> tuple[str, str]:
        """The partition's durable pull consumer: (stream, consumer) names."""
        stream = await self.ensure_stream(topic)
        js = await self.jetstream()
        name = naming.consumer_name(topic, partition)
        config = ConsumerConfig(
            durable_name=name, name=name, ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=naming.partition_filter(self.prefix, topic, partition),
            ack_wait=self.settings.ack_wait_seconds,
            # The consumer gives up on nothing: the service decides when a message is dead.
            max_deliver=-1,
            # One batch in flight per partition: the next batch comes once this one is answered.
            max_ack_pending=self.settings.batch)
        await js.add_consumer(stream, config)
        return stream, name

    async def claims(self) -> KeyValue:
        """The bucket in which replicas claim partitions (a key per partition, expiring)."""
        if self._claims is None:
            js = await self.jetstream()
            bucket = naming.stream_name(self.prefix, "claims")
            try:
                self._claims = await js.create_key_value(KeyValueConfig(
                    bucket=bucket, ttl=self.settings.claim_seconds, history=1,
                    replicas=self.settings.replicas))
            except BadRequestError:
                # The bucket is shared by every service and topic of the deployment and was
                # created by a process with other settings (ack wait, replicas): use it as it
                # is, only making sure it keeps a claim at least as long as this process needs.
                self._claims = await self._existing_claims(js, bucket)
        return self._claims

    async def _existing_claims(self, js: JetStreamContext, bucket: str) -> KeyValue:
        stream = f"KV_{bucket}"
        info = await js.stream_info(stream)
        config = info.config
        ttl = self.settings.claim_seconds
        if not config.max_age or config.max_age < ttl:  # 0: claims would never lapse
            log.warning("event bus claims bucket keeps claims shorter than this process needs; "
                        "lengthening it", bucket=bucket, ttl=config.max_age, needed=ttl)
            config.max_age = ttl
            await js.update_stream(config)
        if config.num_replicas != self.settings.replicas:
            log.warning("event bus claims bucket has other replicas than CJO_BUS_REPLICAS; "
                        "kept as it is", bucket=bucket, replicas=config.num_replicas,
                        wanted=self.settings.replicas)
        return await js.key_value(bucket)


async def _log_error(exc: Exception) -> None:
    log.warning("event bus connection error", error=repr(exc))


async def _disconnected() -> None:
    log.warning("event bus disconnected; reconnecting")
