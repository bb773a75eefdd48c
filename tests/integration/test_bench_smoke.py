"""Smoke test of the benchmark harness: ``python -m bench.run --quick`` runs and writes its JSON.

No timing is asserted (the machine is shared and the sizes are tiny); what is checked
is that every scenario produced a measured figure for Streamer and for its baseline,
that the DynamoDB calls were counted, and that the profile step ran. The peer
(python-socketio + Celery + Redis) is included when redis-server and the ``bench``
extra are installed (``make bench`` installs them); otherwise it is left out.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PEER_READY = shutil.which("redis-server") is not None and all(
    importlib.util.find_spec(m) is not None for m in ("socketio", "celery", "redis")
)


@pytest.mark.timeout(900)
def test_quick_bench_runs_and_writes_json(tmp_path: pathlib.Path) -> None:
    only = "connections,sync,async,fanout,aws,profile" + (",peer" if PEER_READY else "")
    out = tmp_path / "latest.json"
    env = {**os.environ, "BENCH_RESULTS_DIR": str(tmp_path / "results")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--only", only, "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())

    assert doc["meta"]["quick"] is True
    assert doc["meta"]["machine"]["nproc"] >= 1
    scenarios = {row["scenario"] for row in doc["rows"]}
    expected = {"1 connections", "2 sync echo", "3 async echo", "4 fan-out", "6 AWS-shaped"}
    if PEER_READY:
        expected.add("5 peer")
    assert expected <= scenarios, scenarios
    for row in doc["rows"]:
        assert row["streamer"]["median"] is not None, row
        if row["baseline"] is not None:
            assert row["baseline"]["median"] is not None, row
            assert row["ratio"] is not None, row
    held = next(r for r in doc["rows"] if r["metric"] == "held")
    assert held["streamer"]["median"] > 0

    calls = doc["dynamodb_calls_per_request"]
    assert calls["echo_async"]["requests"] > 0
    assert calls["echo_async"]["writes_per_request"] > 0
    assert doc["raw_conditional_writes_per_second"]["median"] > 0

    profile = doc["profile"]
    assert "row" in profile
    assert "processes" in profile or "error" in profile
    # the table went to stdout
    assert "Streamer benchmarks" in proc.stdout
