"""TLS from the CLI: a context dials TLS to a host off this machine, verifies the services'
certificates against a CA file, and refuses plaintext to a remote host unless --insecure. The
server here is a gRPC server with a certificate from a CA made in the test."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as orch_pb
from cjo.orchestration.v1 import orchestration_service_pb2_grpc as orch_grpc
from cjo_cli.config import Config, ConfigError, Context
from cjo_cli.main import app

SECRET = "cjo_live_0123456789abcdef"


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


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, Orchestration]]:
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


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("CJO_API_KEY", SECRET)
    monkeypatch.delenv("CJO_CONTEXT", raising=False)
    return CliRunner()


def test_a_tls_context_with_the_ca_file_lists_journeys(
        runner: CliRunner, tls_server: tuple[str, Path, Orchestration]) -> None:
    target, ca_file, servicer = tls_server
    added = runner.invoke(app, ["context", "add", "tls", "--endpoint",
                                f"orchestration={target}", "--tls", "--ca-file", str(ca_file)])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["--context", "tls", "list", "journeys"])
    assert listed.exit_code == 0, listed.output
    assert "Over TLS" in listed.output
    assert servicer.keys == [f"Bearer {SECRET}"]

    # Without the CA the certificate is not trusted: the call fails, nothing is sent in clear.
    runner.invoke(app, ["context", "add", "untrusted", "--endpoint",
                        f"orchestration={target}", "--tls"])
    refused = runner.invoke(app, ["--context", "untrusted", "list", "journeys"])
    assert refused.exit_code == 1 and "Over TLS" not in refused.output
    assert len(servicer.keys) == 1


def test_plaintext_to_a_remote_host_is_refused_unless_insecure(runner: CliRunner) -> None:
    runner.invoke(app, ["context", "add", "remote", "--host", "cjo.example.com", "--no-tls"])
    refused = runner.invoke(app, ["--context", "remote", "list", "journeys"])
    assert refused.exit_code == 2
    assert "plaintext" in refused.output and "--insecure" in refused.output
    runner.invoke(app, ["context", "add", "lan", "--host", "cjo.example.com", "--no-tls",
                        "--insecure"])
    assert Config.load().contexts["lan"].secure() is False
    # Not said: TLS for a remote host, plaintext on this machine.
    runner.invoke(app, ["context", "add", "auto", "--host", "cjo.example.com"])
    assert Config.load().contexts["auto"].secure() is True
    assert Context("local", {"identity": "127.0.0.1:50051"}).secure() is False
    assert Context("local", {"identity": "localhost:50051"}).secure() is False
    with pytest.raises(ConfigError):
        Context("r", {"identity": "10.0.0.5:50051"}, tls=False).secure()
