"""A small client for cjo's six services, shared by the `cjo` command and the console: where each
service listens, the API key, and grpc.aio channels and stubs that carry the key. No UI here."""

from cjo_client.client import SERVICES, Client, Endpoints, is_loopback
from cjo_client.errors import describe_error, error_reason

__all__ = ["SERVICES", "Client", "Endpoints", "describe_error", "error_reason",
           "is_loopback"]
