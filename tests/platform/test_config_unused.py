"""A service's setting that is set but never read (most often misspelt) is named at start,
with the setting it most resembles, instead of leaving the default in force without a word."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cjo_platform.config import DEFAULT_PORTS, Env, load_service_settings

ROOT = Path(__file__).resolve().parents[2]
# The settings tables of the operations guide (rows starting with "|").
TABLE_ROWS = [line for line in (ROOT / "docs/operations.md").read_text().splitlines()
              if line.startswith("|")]


def test_a_misspelt_setting_is_named_with_the_one_it_resembles() -> None:
    env = Env({"CJO_DELIVERY_RETENTION_REQUEST_LOGS_DAYS": "1",
               "CJO_DELIVERY_RETENTION_REQUEST_LOG_DAYS": "",
               "CJO_DELIVERY_POLL_SECONDS": "2",
               "CJO_DELIVERY_NOTHING_LIKE_IT": "x"})
    env.int("CJO_DELIVERY_RETENTION_REQUEST_LOG_DAYS", 7)
    env.float("CJO_DELIVERY_POLL_SECONDS", 1.0)
    assert env.unused("delivery") == [
        ("CJO_DELIVERY_NOTHING_LIKE_IT", None),
        ("CJO_DELIVERY_RETENTION_REQUEST_LOGS_DAYS", "CJO_DELIVERY_RETENTION_REQUEST_LOG_DAYS")]


def test_other_services_settings_and_kubernetes_service_links_are_not_reported() -> None:
    env = Env({"CJO_IDENTITY_GROUP_COMMIT_MS": "2",  # the shared ConfigMap: another's
               "CJO_DATABASE_URL": "sqlite://",  # shared, read by every service
               "CJO_DELIVERY_SERVICE_HOST": "10.0.0.7",
               "CJO_DELIVERY_SERVICE_PORT": "50054",
               "CJO_DELIVERY_SERVICE_PORT_GRPC": "50054",
               "CJO_DELIVERY_PORT_50054_TCP": "tcp://10.0.0.7:50054",
               "CJO_DELIVERY_PORT_50054_TCP_ADDR": "10.0.0.7",
               "CJO_DELIVERY_PORT_50054_TCP_PORT": "50054",
               "CJO_DELIVERY_PORT_50054_TCP_PROTO": "tcp",
               "CJO_DELIVERY_TARGET": "delivery:50054"})
    env.raw("CJO_DELIVERY_TARGET")
    assert env.unused("delivery") == []


@pytest.mark.parametrize("service", sorted(DEFAULT_PORTS))
def test_every_documented_setting_of_a_service_is_read_when_it_starts(
        service: str, tmp_path: Path) -> None:
    """No documented setting is reported as unused: each is read by the service's start-up,
    whatever else is set (the delivery tracking's link and secret only with its port, which
    is said in their row)."""
    environ = {"CJO_DATA_DIR": str(tmp_path), "CJO_SERVICE_TOKEN": "t" * 32,
               "CJO_DELIVERY_TRACKING_PORT": "0"}
    env = Env(environ)
    settings = load_service_settings(service, env)
    app = importlib.import_module(f"cjo_{service}.bootstrap").build(settings, env)
    app.db.dispose()
    env.check()
    prefix = f"CJO_{service.upper()}_"
    documented = {name for row in TABLE_ROWS
                  for name in re.findall(prefix + r"[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_<])",
                                         row.replace("CJO_<SERVICE>_", prefix))}
    assert documented, f"no setting of {service} found in docs/operations.md"
    assert sorted(documented - env.asked) == []


def test_a_service_logs_its_unused_setting_at_start(tmp_path: Path) -> None:
    environ = {**os.environ, "CJO_DATA_DIR": str(tmp_path), "CJO_SERVICE_TOKEN": "t" * 32,
               "CJO_LOG_FORMAT": "json",
               "CJO_CONTENT_TEMPLATE_CACHE_ENTRIE": "64"}
    done = subprocess.run([sys.executable, "-m", "cjo_content", "migrate"], env=environ,
                          capture_output=True, text=True, timeout=60, check=True)
    output = done.stdout + done.stderr
    assert "CJO_CONTENT_TEMPLATE_CACHE_ENTRIE" in output
    assert '"did_you_mean": "CJO_CONTENT_TEMPLATE_CACHE_ENTRIES"' in output
