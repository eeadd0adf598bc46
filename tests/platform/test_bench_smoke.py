"""The suite-wide benchmarks still run, at tiny sizes: `make bench-latency` and
`make bench-throughput` start every service as a process, so a refactoring of their shared set-up
(tests/benchmarks/bench_suite.py) or a service change they rely on shows here, not on the day
someone measures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CJO_")}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_the_latency_benchmark_measures_every_email_of_a_small_rate() -> None:
    # A long drain: on a machine busy with other work the 20 emails may take a while.
    out = run("latency.py", "--backend", "sqlite", "--rates", "20", "--seconds", "1",
              "--drain", "120", "--hops")
    assert "emails still missing" not in out, out
    # The per-rate line: 20 offered, every call accepted, latencies measured, nothing missing.
    assert "[sqlite, tracing export] " in out  # the label names the tracing mode
    unlabelled = [line.partition("] ")[2] for line in out.splitlines()]
    (row,) = [line for line in unlabelled
              if line.split()[:1] == ["20"] and "events/s" not in line][-1:]
    fields = row.split()
    assert float(fields[1]) == 20 and fields[7:] == ["0", "0", "0"], row
    assert "20 events/s: per event" in out  # the CPU table
    assert "services' CPU ms per event less idle polling" in out
    # Where the time goes, from the traces (events that travelled alone; under load they may
    # all have gone in batches).
    assert "where the time goes at 20 events/s" in out
    assert "highest rate with p99 < 250 ms:" in out


def test_the_throughput_benchmark_runs_both_scenarios() -> None:
    out = run("throughput.py", "--backend", "sqlite", "--events", "1000", "--signups", "20",
              "--profile")
    assert "[sqlite, tracing export] ingest: 1000 events over 5,000 profiles" in out, out
    assert "analytics counted 20 entries and 20 sends; no duplicates" in out
    assert "journey (sign-up -> email -> analytics): per journey" in out


def test_the_rpc_benchmark_measures_each_layer() -> None:
    out = run("rpc.py", "--seconds", "0.2", "--variants", "bare,cjo,-auth")
    assert out.startswith("tracing: off"), out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert set(rows) == {"bare", "cjo", "-auth"}, out
    # calls/s, server and client CPU µs per call, for 1 and for 32 in flight
    assert all(len(r) == 6 and all(float(f.replace(",", "")) > 0 for f in r)
               for r in rows.values()), out
