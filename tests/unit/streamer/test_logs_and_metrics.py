"""JSON logs carry ids and never tokens; metric helpers enforce naming."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import aiohttp
import pytest

from streamer import metrics
from streamer.logs import JsonFormatter, log_context, redact

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def _logger() -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter(service="test"))
    log = logging.getLogger(f"t{id(buf)}")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log, buf


def test_ids_from_context_and_extra_fields() -> None:
    log, buf = _logger()
    with log_context(request_id="r1", connection_id="c1"):
        log.info("routed %s", "echo", extra={"action": "echo", "n": 3})
    log.info("outside")
    first, second = (json.loads(line) for line in buf.getvalue().splitlines())
    assert first["request_id"] == "r1" and first["connection_id"] == "c1"
    assert first["message"] == "routed echo" and first["action"] == "echo" and first["n"] == 3
    assert first["service"] == "test" and first["level"] == "info"
    assert "request_id" not in second


async def test_ids_follow_tasks() -> None:
    log, buf = _logger()

    async def work() -> None:
        log.info("in task")

    with log_context(request_id="r2"):
        await asyncio.create_task(work())
    assert json.loads(buf.getvalue())["request_id"] == "r2"


def test_tokens_are_redacted() -> None:
    log, buf = _logger()
    log.info("token was %s", TOKEN, extra={"header": f"Bearer {TOKEN}"})
    try:
        raise ValueError(TOKEN)
    except ValueError:
        log.exception("boom")
    assert TOKEN not in buf.getvalue()
    assert "[redacted-token]" in redact(TOKEN)


def test_metric_naming_rules() -> None:
    c = metrics.counter("streamer_test_things_total", "things", ["kind"])
    assert metrics.counter("streamer_test_things_total", "things", ["kind"]) is c
    with pytest.raises(ValueError):
        metrics.counter("streamer_test_things", "no suffix")
    with pytest.raises(ValueError):
        metrics.counter("other_things_total", "no prefix")
    with pytest.raises(ValueError):
        metrics.histogram("streamer_test_latency", "no unit")
    with pytest.raises(ValueError):
        metrics.gauge("streamer_test_things_total", "same name, other kind")
    c.labels(kind="a").inc()
    assert "streamer_test_things_total" in metrics.registered_names()


async def test_http_routes() -> None:
    health = metrics.Health()
    runner, port = await metrics.start_http(health=health, host="127.0.0.1", port=0)
    try:
        async with aiohttp.ClientSession() as s:
            base = f"http://127.0.0.1:{port}"
            assert (await s.get(f"{base}/healthz")).status == 200
            r = await s.get(f"{base}/readyz")
            assert r.status == 503 and (await r.json())["reason"] == "starting"
            health.set_ready()
            assert (await s.get(f"{base}/readyz")).status == 200

            async def failing() -> bool:
                raise RuntimeError("db down")

            health.checks.append(failing)
            assert (await s.get(f"{base}/readyz")).status == 503
            health.checks.clear()
            health.set_not_ready("draining")
            assert (await (await s.get(f"{base}/readyz")).json())["reason"] == "draining"
            text = await (await s.get(f"{base}/metrics")).text()
            assert "streamer_" in text or "python_info" in text
    finally:
        await runner.cleanup()
