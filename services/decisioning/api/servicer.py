"""DecisioningService: each RPC turns its request into domain inputs, runs one use-case and
turns the result into its reply."""

from __future__ import annotations

from cjo.decisioning.v1 import decisioning_service_pb2_grpc as pb_grpc
from cjo_platform.db.unit_of_work import Transactions

DOMAIN = "decisioning.cjo"
SERVICE = "cjo.decisioning.v1.DecisioningService"
# Called by other cjo services only (identity's events, delivery's message facts).
SERVICE_ONLY_METHODS = {f"/{SERVICE}/RecordEvents", f"/{SERVICE}/RecordMessageFacts"}


class DecisioningServicer(pb_grpc.DecisioningServiceServicer):
    def __init__(self, transactions: Transactions) -> None:
        self.transactions = transactions
