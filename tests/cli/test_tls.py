"""TLS from the CLI: a context dials TLS to a host off this machine, verifies the services'
certificates against a CA file, and refuses plaintext to a remote host unless --insecure. The
server here is a gRPC server with a certificate from a CA made in the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tls_support
from tls_support import Orchestration
from typer.testing import CliRunner

from cjo_cli.config import Config, ConfigError, Context
from cjo_cli.main import app

SECRET = "cjo_live_0123456789abcdef"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path, Orchestration]]:
    with tls_support.tls_server(tmp_path) as served:
        yield served


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
