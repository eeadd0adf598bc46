"""`cjo context`: contexts saved under $XDG_CONFIG_HOME/cjo, a stored key readable by its owner
only and never printed, a key read from an environment variable instead, and manifests that
cannot be read refused before anything is called."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cjo_cli.config import Config
from cjo_cli.main import app

SECRET = "cjo_live_0123456789abcdef"


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("CJO_API_KEY", raising=False)
    monkeypatch.delenv("CJO_CONTEXT", raising=False)
    return CliRunner()


def test_contexts_store_the_key_privately_and_never_show_it(runner: CliRunner,
                                                           tmp_path: Path) -> None:
    added = runner.invoke(app, ["context", "add", "prod", "--host", "cjo.internal",
                                "--endpoint", "identity=ingest.internal:443",
                                "--api-key-stdin"], input=SECRET + "\n")
    assert added.exit_code == 0, added.output
    runner.invoke(app, ["context", "add", "ci", "--api-key-env", "CI_CJO_KEY", "--no-use"])

    config_file = tmp_path / "cjo" / "config.yaml"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    config = Config.load()
    assert config.current == "prod"
    assert config.contexts["prod"].endpoints["identity"] == "ingest.internal:443"
    assert config.contexts["prod"].endpoints["content"] == "cjo.internal:50052"
    assert SECRET not in (tmp_path / "cjo" / "config.yaml").read_text().replace(
        f"api_key: {SECRET}", "")  # stored once, as the key, nowhere else
    assert "CI_CJO_KEY" in config_file.read_text()

    listed = runner.invoke(app, ["context", "list"])
    assert listed.exit_code == 0
    assert "prod" in listed.output and "stored" in listed.output
    assert "$CI_CJO_KEY" in listed.output
    assert SECRET not in listed.output

    assert runner.invoke(app, ["context", "use", "ci"]).exit_code == 0
    assert Config.load().current == "ci"
    # The variable is not set: a clear message, exit code 2, nothing called.
    missing = runner.invoke(app, ["list", "journeys"])
    assert missing.exit_code == 2
    assert "CI_CJO_KEY" in missing.output
    assert runner.invoke(app, ["context", "use", "nowhere"]).exit_code == 2


def test_a_manifest_of_an_unknown_kind_is_refused_by_file(runner: CliRunner,
                                                          tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Widget\nspec: {}\n")
    done = runner.invoke(app, ["apply", "-f", str(bad)])
    assert done.exit_code == 2
    assert "bad.yaml" in done.output and "Widget" in done.output
