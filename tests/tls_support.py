"""A gRPC server with server credentials from a CA made in the test, serving a minimal
orchestration (ListJourneys) that records the keys it was called with: what the CLI's and the
console's TLS tests dial."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


class Orchestration(orch_grpc.OrchestrationServiceServicer):
    def __init__(self) -> None:
        self.keys: list[str] = []

    def ListJourneys(self, request: orch_pb.ListJourneysRequest,
                     context: grpc.ServicerContext) -> orch_pb.ListJourneysResponse:
        self.keys.append(dict(context.invocation_metadata()).get("authorization", ""))
        return orch_pb.ListJourneysResponse(journeys=[journey_pb2.Journey(
            name="journeys/j1", journey_id="j1", display_name="Over TLS",
            state=journey_pb2.JOURNEY_STATE_ACTIVE)])


@contextmanager
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, Orchestration]]:
    """(``localhost:port``, the CA's PEM file, the servicer)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cjo test CA")])
    ca = _certificate("cjo test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("localhost", server_key, ca_name, ca_key, ca=False)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    credentials = grpc.ssl_server_credentials([(
        server_key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()),
        server.public_bytes(serialization.Encoding.PEM))])
    servicer = Orchestration()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    orch_grpc.add_OrchestrationServiceServicer_to_server(servicer, grpc_server)
    port = grpc_server.add_secure_port("127.0.0.1:0", credentials)
    grpc_server.start()
    try:
        yield f"localhost:{port}", ca_file, servicer
    finally:
        grpc_server.stop(None)
