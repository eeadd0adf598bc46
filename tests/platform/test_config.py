from __future__ import annotations

import pytest

from cjo_platform.config import ConfigError, Env, load_service_settings

TOKEN = "x" * 32


def test_defaults_give_a_local_sqlite_service() -> None:
    env = Env({"CJO_SERVICE_TOKEN": TOKEN})
    settings = load_service_settings("content", env)
    env.check()
    assert settings.address == "127.0.0.1:50052"
    assert settings.database_url == "sqlite:///.cjo/data/content.db"
    assert settings.peer("identity") == "127.0.0.1:50051"
    assert settings.database_schema == "cjo_content"


def test_service_url_beats_shared_url_and_targets_beat_ports() -> None:
    env = Env({"CJO_SERVICE_TOKEN": TOKEN,
               "CJO_DATABASE_URL": "postgresql+psycopg://db/shared",
               "CJO_DELIVERY_DATABASE_URL": "postgresql+psycopg://db/delivery",
               "CJO_IDENTITY_TARGET": "cjo-identity:50051",
               "CJO_IDENTITY_PORT": "tcp://10.0.0.1:50051"})  # a Kubernetes service link
    settings = load_service_settings("delivery", env)
    env.check()
    assert settings.database_url.endswith("/delivery")
    assert settings.peer("identity") == "cjo-identity:50051"


def test_every_problem_is_reported_at_once() -> None:
    env = Env({"CJO_SERVICE_TOKEN": "short", "CJO_CONTENT_PORT": "http",
               "CJO_DATABASE_URL": "mysql://x", "CJO_LOG_FORMAT": "xml"})
    load_service_settings("content", env)
    with pytest.raises(ConfigError) as error:
        env.check()
    message = str(error.value)
    for name in ("CJO_SERVICE_TOKEN", "CJO_CONTENT_PORT", "CJO_DATABASE_URL", "CJO_LOG_FORMAT"):
        assert name in message


def test_missing_service_token_is_named() -> None:
    env = Env({})
    load_service_settings("identity", env)
    with pytest.raises(ConfigError, match="CJO_SERVICE_TOKEN is required"):
        env.check()


def test_the_facts_linger_is_read_in_milliseconds_and_bounded() -> None:
    env = Env({"CJO_SERVICE_TOKEN": TOKEN})
    assert load_service_settings("identity", env).facts_linger_seconds == 0.05
    env = Env({"CJO_SERVICE_TOKEN": TOKEN, "CJO_FACTS_LINGER_MS": "0"})
    assert load_service_settings("delivery", env).facts_linger_seconds == 0
    env = Env({"CJO_SERVICE_TOKEN": TOKEN, "CJO_FACTS_LINGER_MS": "60000"})
    load_service_settings("delivery", env)
    with pytest.raises(ConfigError, match="CJO_FACTS_LINGER_MS"):
        env.check()


def test_a_float_setting_of_nan_is_refused_with_its_name() -> None:
    # "nan" parses as a float and passes every bound: it must be refused like any non-number.
    env = Env({"CJO_DELIVERY_RECORD_LINGER_MS": "nan", "CJO_SMTP_TIMEOUT_SECONDS": "12.5"})
    assert env.float("CJO_DELIVERY_RECORD_LINGER_MS", 10.0, maximum=1000.0) == 10.0
    assert env.float("CJO_SMTP_TIMEOUT_SECONDS", 10.0) == 12.5
    assert env.errors == ["CJO_DELIVERY_RECORD_LINGER_MS='nan' is not a number"]


@pytest.mark.parametrize("prefix", ["Cjo_", "cjo prod_", "1cjo_", "cjo-", "x" * 51])
def test_a_schema_prefix_postgresql_would_not_find_is_refused(prefix: str) -> None:
    """The schema reaches the server unquoted in the connection's search_path: an upper-case
    letter was folded (the schema created quoted never found), a space refused the
    connection."""
    env = Env({"CJO_SERVICE_TOKEN": TOKEN, "CJO_DATABASE_SCHEMA_PREFIX": prefix})
    load_service_settings("orchestration", env)
    with pytest.raises(ConfigError, match="CJO_DATABASE_SCHEMA_PREFIX"):
        env.check()


def test_a_plain_schema_prefix_is_taken() -> None:
    env = Env({"CJO_SERVICE_TOKEN": TOKEN, "CJO_DATABASE_SCHEMA_PREFIX": "t0a1b2c3d4e_"})
    settings = load_service_settings("orchestration", env)
    env.check()
    assert settings.database_schema == "t0a1b2c3d4e_orchestration"
