"""The providers a message can go to: the workspace's providers of its channel (built once and
rebuilt when their settings change), the deployment's SMTP server for email when the workspace
configured none, and the inbox for in-app messages; each with its circuit breaker.

Live providers are this process's own (connections belong to the process that opened them);
each route's breaker is this process's copy of the breaker every replica shares
(service_layer/breakers.py keeps it in step with the database).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cjo_delivery.domain.breaker import CircuitBreaker
from cjo_delivery.domain.failover import BreakerState, ProviderState
from cjo_delivery.domain.messages import Channel, Claim
from cjo_delivery.domain.providers import DEFAULT_SMTP_ID, ProviderConfig
from cjo_delivery.domain.ratelimit import RateLimit, limit_of
from cjo_delivery.domain.sending import Provider

ProviderBuilder = Callable[[ProviderConfig], Provider]
# The breaker's state as failover names it, looked up (an Enum call per message costs more).
_BREAKER_STATES = {state.value: state for state in BreakerState}


@dataclass
class Route:
    """A provider of one workspace and channel, with its breaker. ``workspace_id`` is "" for
    the deployment's own routes (its SMTP server, the inbox), shared by every workspace."""

    provider_id: str
    provider: Provider
    breaker: CircuitBreaker
    limit: RateLimit | None = None
    workspace_id: str = ""
    synced_at: datetime | None = None  # when ``breaker`` was last read from the database

    @property
    def key(self) -> tuple[str, str]:
        """The breaker's key among every replica's."""
        return (self.workspace_id, self.provider_id)

    def state(self, now: datetime) -> ProviderState:
        """What failover needs to know of this provider at ``now``."""
        return ProviderState(self.provider_id, self.limit is not None,
                             _BREAKER_STATES[self.breaker.state(now)],
                             self.breaker.trial_under_way(now), self.breaker.open_until)


class Routes:
    def __init__(self, fallback: Provider, *, breaker_failures: int,
                 breaker_cool_down: timedelta, build_provider: ProviderBuilder | None = None,
                 inbox: Provider | None = None) -> None:
        self._failures = breaker_failures
        self._cool_down = breaker_cool_down
        self.build_provider = build_provider
        self._fallback = Route(DEFAULT_SMTP_ID, fallback, self._new_breaker())
        self._inbox = None if inbox is None else Route("inbox", inbox, self._new_breaker())
        # Live providers by (workspace, provider id), rebuilt when their etag changes.
        self._live: dict[tuple[str, str], tuple[str, Route]] = {}
        self._retired: list[Provider] = []

    def _new_breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self._failures, self._cool_down)

    def of(self, claim: Claim, configs: Sequence[ProviderConfig]) -> list[Route]:
        """The routes of ``claim`` in order of priority, given its workspace's providers of its
        channel (``configs``, already in that order)."""
        if claim.channel is Channel.IN_APP:
            return [self._inbox] if self._inbox is not None else []
        if not configs:
            return [self._fallback] if claim.channel is Channel.EMAIL else []
        routes = []
        for config in configs:
            key = (config.workspace_id, config.provider_id)
            live = self._live.get(key)
            if live is None or live[0] != config.etag:
                if live is not None:  # may still be sending; closed at shutdown
                    self._retired.append(live[1].provider)
                assert self.build_provider is not None
                live = (config.etag, Route(config.provider_id, self.build_provider(config),
                                           self._new_breaker(), limit_of(config.config),
                                           config.workspace_id))
                self._live[key] = live
            routes.append(live[1])
        return routes

    async def close(self) -> None:
        live, self._live = self._live, {}
        retired, self._retired = self._retired, []
        for provider in [*(route.provider for _, route in live.values()), *retired]:
            await provider.close()
