"""The counting hook `tests/benchmarks/throughput.py --profile` loads into every service process:
its commits, statements and rows written must be what the process did, or the per-event table
it prints is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HOOK = Path(__file__).resolve().parents[1] / "benchmarks" / "profile_hook"

SCRIPT = """
import os, signal
import sqlalchemy as sa
engine = sa.create_engine("sqlite:///" + os.environ["DB"])
with engine.begin() as conn:  # one transaction, two statements, three rows written
    conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    conn.execute(sa.text("INSERT INTO t VALUES (:x)"), [{"x": 1}, {"x": 2}, {"x": 3}])
with engine.begin() as conn:  # another: one update of two rows, one select
    conn.execute(sa.text("UPDATE t SET x = x + 10 WHERE x < 3"))
    conn.execute(sa.text("SELECT count(*) FROM t")).scalar()
os.kill(os.getpid(), signal.SIGUSR1)
os.kill(os.getpid(), signal.SIGUSR1)
"""


def test_the_hook_counts_commits_statements_and_rows_written(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HOOK), *sys.path]),
           "CJO_BENCH_DB_STATS": str(tmp_path), "DB": str(tmp_path / "t.db")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, timeout=60)
    assert proc.returncode == 0
    (written,) = tmp_path.glob("*.json")
    counts = json.loads(written.read_text())
    assert counts == {"commits": 2, "rollbacks": 0, "statements": 4, "rows_written": 5,
                      "seq": 2}


def test_without_the_variable_the_hook_does_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CJO_BENCH_DB_STATS"}
    env.update({"PYTHONPATH": os.pathsep.join([str(HOOK), *sys.path]),
                "DB": str(tmp_path / "t.db")})
    script = SCRIPT.replace("os.kill(os.getpid(), signal.SIGUSR1)\n", "", 2) + (
        "import sys; assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL\n")
    assert subprocess.run([sys.executable, "-c", script], env=env, timeout=60).returncode == 0


def test_with_a_statement_folder_the_hook_also_counts_per_statement(tmp_path: Path) -> None:
    stats, tally = tmp_path / "stats", tmp_path / "statements"
    stats.mkdir()
    tally.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HOOK), *sys.path]),
           "CJO_BENCH_DB_STATS": str(stats), "CJO_BENCH_STMT_DIR": str(tally),
           "DB": str(tmp_path / "t.db")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, timeout=60)
    assert proc.returncode == 0
    (written,) = tally.glob("*.json")
    assert json.loads(written.read_text()) == {
        "CREATE TABLE t (x INTEGER)": 1, "INSERT INTO t VALUES (?)": 1,
        "UPDATE t SET x = x + 10 WHERE x < 3": 1, "SELECT count(*) FROM t": 1}
    # The counts the benchmark reads are unchanged.
    (counts,) = stats.glob("*.json")
    assert json.loads(counts.read_text())["statements"] == 4
