"""Status webhooks of real providers: one module per provider, each turning a signed request
into :class:`cjo_delivery.domain.provider_events.ProviderEvent` s (see ``receiver.py``)."""
