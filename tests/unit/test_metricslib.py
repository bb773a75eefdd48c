"""tests/metricslib.py, the one reader of /metrics in tests, against prometheus_client's own output."""

from __future__ import annotations

from metricslib import parse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


def test_reads_what_prometheus_client_writes() -> None:
    registry = CollectorRegistry()
    calls = Counter("streamer_x_calls_total", "calls", ["action", "outcome"], registry=registry)
    Counter("streamer_x_unused_total", "never incremented", ["reason"], registry=registry)
    Gauge("streamer_x_active", "active", registry=registry).set(4)
    Histogram("streamer_x_seconds", "time", registry=registry).observe(0.2)
    calls.labels(action="echo", outcome="ok").inc(3)
    calls.labels(action="echo", outcome="error").inc()
    calls.labels(action='say "hi"', outcome="ok").inc(2)

    metrics = parse(generate_latest(registry).decode())

    assert metrics.total("streamer_x_calls_total", action="echo") == 4
    assert metrics.total("streamer_x_calls_total") == 6
    assert metrics.total("streamer_x_calls_total", action="none") == 0
    assert metrics.value("streamer_x_calls_total", action="echo", outcome="ok") == 3
    assert metrics.value("streamer_x_calls_total", action="echo") is None  # not an exact label set
    assert metrics.value("streamer_x_calls_total", action='say "hi"', outcome="ok") == 2  # escaping
    assert metrics.by("streamer_x_calls_total", "outcome", action="echo") == {"ok": 3, "error": 1}
    assert metrics.by("streamer_x_calls_total", "action", "outcome")[("echo", "error")] == 1
    assert metrics.value("streamer_x_active") == 4
    assert metrics.value("streamer_x_seconds_count") == 1
    for declared in ("streamer_x_unused_total", "streamer_x_active", "streamer_x_seconds_bucket"):
        assert declared in metrics
    assert "streamer_x_missing" not in metrics
    assert parse('streamer_x_offers_total{result="won"} 2.0\n').by("streamer_x_offers_total") == {"won": 2}
