"""The test clock that end-to-end tests share between processes (CJO_TEST_CLOCK_FILE), and the
configuration that keeps it out of real deployments."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cjo_platform.clock import (
    FileOffsetClock,
    ManualClock,
    SystemClock,
    advance_test_clock,
    read_test_clock_offset,
    set_test_clock_offset,
)
from cjo_platform.config import ConfigError, Env, load_service_settings
from cjo_platform.rpc.server import service_clock

TOKEN = "x" * 32
WALL = datetime(2026, 5, 1, 12, tzinfo=UTC)


class Ticks:
    """A monotonic clock the test moves, to control when the file is looked at again."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        return self.value


def file_clock(path: Path, ticks: Ticks) -> FileOffsetClock:
    return FileOffsetClock(path, base=ManualClock(WALL), recheck_seconds=0.05, monotonic=ticks)


def test_the_clock_is_the_wall_clock_plus_the_files_offset(tmp_path: Path) -> None:
    path, ticks = tmp_path / "clock", Ticks()
    clock = file_clock(path, ticks)
    assert clock.now() == WALL  # no file yet: no offset

    set_test_clock_offset(path, timedelta(hours=1))
    ticks.value += 0.06
    assert clock.now() == WALL + timedelta(hours=1)

    assert advance_test_clock(path, timedelta(days=1, minutes=30)) == timedelta(
        days=1, hours=1, minutes=30)
    ticks.value += 0.06
    assert clock.now() == WALL + timedelta(days=1, hours=1, minutes=30)
    assert read_test_clock_offset(path) == timedelta(days=1, hours=1, minutes=30)

    set_test_clock_offset(path, timedelta(days=-200))  # a start in the past is an offset too
    ticks.value += 0.06
    assert clock.now() == WALL - timedelta(days=200)


def test_the_file_is_looked_at_at_most_every_recheck_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, ticks = tmp_path / "clock", Ticks()
    set_test_clock_offset(path, timedelta(minutes=5))
    clock = file_clock(path, ticks)
    assert clock.now() == WALL + timedelta(minutes=5)

    reads = []
    original = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting)
    set_test_clock_offset(path, timedelta(minutes=10))
    for _ in range(100):  # within the interval: the old offset, and no look at the file
        assert clock.now() == WALL + timedelta(minutes=5)
    ticks.value += 0.05
    assert clock.now() == WALL + timedelta(minutes=10)
    ticks.value += 0.05
    assert clock.now() == WALL + timedelta(minutes=10)  # unchanged file: not read again
    assert reads == [path]


def test_a_half_written_file_keeps_the_last_offset(tmp_path: Path) -> None:
    path, ticks = tmp_path / "clock", Ticks()
    set_test_clock_offset(path, timedelta(seconds=90))
    clock = file_clock(path, ticks)
    assert clock.now() == WALL + timedelta(seconds=90)
    for garbage in ("12.5.", "nan", "1e999"):
        path.write_text(garbage)
        ticks.value += 0.06
        assert clock.now() == WALL + timedelta(seconds=90), garbage
    path.write_text("120\n")
    ticks.value += 0.06
    assert clock.now() == WALL + timedelta(seconds=120)


def test_the_real_wall_clock_moves_under_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    set_test_clock_offset(path, timedelta(days=3))
    clock = FileOffsetClock(path)
    before = datetime.now(UTC)
    now = clock.now()
    assert before + timedelta(days=3) <= now <= datetime.now(UTC) + timedelta(days=3)


def settings(environ: dict[str, str]):  # type: ignore[no-untyped-def]
    env = Env({"CJO_SERVICE_TOKEN": TOKEN, **environ})
    loaded = load_service_settings("orchestration", env)
    env.check()
    return loaded


def test_the_test_clock_needs_cjo_env_test(tmp_path: Path) -> None:
    path = str(tmp_path / "clock")
    for environ in ({"CJO_TEST_CLOCK_FILE": path},  # CJO_ENV defaults to development
                    {"CJO_TEST_CLOCK_FILE": path, "CJO_ENV": "production"},
                    {"CJO_TEST_CLOCK_FILE": path, "CJO_ENV": "development"}):
        with pytest.raises(ConfigError, match="CJO_TEST_CLOCK_FILE is for tests only"):
            settings(environ)
    with pytest.raises(ConfigError, match="CJO_ENV"):
        settings({"CJO_ENV": "staging"})

    plain = settings({})
    assert (plain.environment, plain.test_clock_file) == ("development", None)
    assert isinstance(service_clock(plain), SystemClock)


def test_services_run_on_the_test_clock_with_a_loud_warning(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    set_test_clock_offset(path, timedelta(hours=-5))
    configured = settings({"CJO_TEST_CLOCK_FILE": str(path), "CJO_ENV": "test"})
    with capture_logs() as logs:
        clock = service_clock(configured)
    assert isinstance(clock, FileOffsetClock) and clock.path == path
    assert clock.offset == timedelta(hours=-5)
    warning = [e for e in logs if e["log_level"] == "warning"]
    assert warning and "TEST CLOCK" in warning[0]["event"] and warning[0]["file"] == str(path)
