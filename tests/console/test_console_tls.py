"""The console's gRPC clients over TLS (CJO_CONSOLE_TLS, CJO_CONSOLE_CA_FILE): signed in with
a key, its pages come from a service that only speaks TLS with a certificate from a test CA."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.testclient import TestClient
from tls_support import tls_server

from cjo_console.api.app import create_app
from cjo_console.config import load

KEY = "cjo_live_0123456789abcdef"
SECRET = "console-tls-secret-0123456789abcdefghijk"


def signed_in_journeys(env: dict[str, str]) -> str:
    with TestClient(create_app(load(env))) as client:
        page = client.get("/sign-in")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        signed = client.post("/sign-in", data={"api_key": KEY, "csrf_token": csrf.group(1)},
                             follow_redirects=False)
        if signed.status_code != 303:
            return signed.text
        return client.get("/journeys").text


def test_the_console_reaches_the_services_over_tls_with_its_ca_file(tmp_path: Path) -> None:
    with tls_server(tmp_path) as (target, ca_file, servicer):
        env = {"CJO_CONSOLE_SECRET": SECRET, "CJO_ORCHESTRATION_TARGET": target}
        assert "Over TLS" in signed_in_journeys(
            {**env, "CJO_CONSOLE_TLS": "true", "CJO_CONSOLE_CA_FILE": str(ca_file)})
        assert servicer.keys and set(servicer.keys) == {f"Bearer {KEY}"}
        # Plaintext to a TLS port (the old behaviour, and the default) does not get through.
        calls = len(servicer.keys)
        assert "Over TLS" not in signed_in_journeys(env)
        assert len(servicer.keys) == calls
