"""The event stream on NATS JetStream, chosen by ``CJO_EVENT_BUS=nats://host:4222``.

Unset, every cross-service stream is what it always was: an outbox forwarder calls the
receiver's batch RPC. Set, the same outbox rows are relayed to JetStream instead
(:mod:`cjo_platform.bus.relay`) and the receiving service pulls them
(:mod:`cjo_platform.bus.consumer`) into the very use-case its batch RPC runs
(:mod:`cjo_platform.bus.receiver`). Streams, subjects and consumers: :mod:`cjo_platform.bus.
naming`; the connection and the settings: :mod:`cjo_platform.bus.connection`.
"""

from cjo_platform.bus.connection import Bus, BusSettings, load_bus

__all__ = ["Bus", "BusSettings", "load_bus"]
