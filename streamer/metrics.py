"""Prometheus metrics with one naming rule, and the HTTP side every service serves.

Names are ``streamer_<service>_<what>`` with ``_total`` on counters and ``_seconds``
or ``_bytes`` on histograms; :func:`counter`, :func:`histogram` and :func:`gauge`
enforce that, and registering the same metric twice returns the existing one (a
module imported by two services in one test process must not crash).

:func:`start_http` serves ``/metrics``, ``/healthz`` (the process is alive) and
``/readyz`` (it can do its job; false while starting or draining) with aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import prometheus_client
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)
_NAME_RE = re.compile(r"^streamer_[a-z][a-z0-9_]*$")
REGISTRY: CollectorRegistry = prometheus_client.REGISTRY
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_made: dict[str, Any] = {}


def _make(kind: type[M], name: str, doc: str, labels: Sequence[str], **kw: Any) -> M:
    if not _NAME_RE.match(name):
        raise ValueError(f"metric {name!r} must match {_NAME_RE.pattern}")
    existing = _made.get(name)
    if existing is not None:
        if not isinstance(existing, kind):
            raise ValueError(f"metric {name!r} already registered as {type(existing).__name__}")
        return existing
    metric = kind(name.removesuffix("_total") if kind is Counter else name, doc, list(labels), **kw)
    _made[name] = metric
    return metric


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    """A counter; ``name`` must end in ``_total``."""
    if not name.endswith("_total"):
        raise ValueError(f"counter {name!r} must end in _total")
    return _make(Counter, name, doc, labels)


def histogram(
    name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
) -> Histogram:
    """A histogram; ``name`` must end in ``_seconds`` or ``_bytes``."""
    if not name.endswith(("_seconds", "_bytes")):
        raise ValueError(f"histogram {name!r} must end in _seconds or _bytes")
    return _make(Histogram, name, doc, labels, buckets=tuple(buckets))


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    """A gauge (a level, not a count)."""
    return _make(Gauge, name, doc, labels)


def registered_names() -> set[str]:
    """Every sample name the process exports (for tests that check dashboards)."""
    names = set()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            names.add(sample.name)
    return names


class Health:
    """Liveness and readiness as seen by ``/healthz`` and ``/readyz``.

    ``ready`` starts False; a service sets it once its dependencies answer and clears
    it when it starts draining, so the load balancer stops sending new work first.
    Extra ``checks`` are awaited on each ``/readyz`` call; each of ``live_checks`` is
    called on each ``/healthz`` call and names why the process is dead (None: alive).
    """

    def __init__(self) -> None:
        self.alive = True
        self.ready = False
        self.reason = "starting"
        self.checks: list[Callable[[], Awaitable[bool]]] = []
        self.live_checks: list[Callable[[], str | None]] = []

    def problem(self) -> str | None:
        """Why ``/healthz`` fails, or None."""
        if not self.alive:
            return "dead"
        for check in self.live_checks:
            reason = check()
            if reason:
                return reason
        return None

    def set_ready(self) -> None:
        self.ready, self.reason = True, "ok"

    def set_not_ready(self, reason: str) -> None:
        self.ready, self.reason = False, reason


def http_routes(health: Health) -> list[web.RouteDef]:
    """The three observability routes, to add to any aiohttp app."""

    async def metrics(_: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(REGISTRY)
        return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        problem = health.problem()
        if problem is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "dead", "reason": problem}, status=503)

    async def readyz(_: web.Request) -> web.Response:
        ready = health.ready
        reason = health.reason
        if ready:
            for check in health.checks:
                try:
                    ok = await check()
                except Exception as exc:  # a failing check means not ready, never a 500
                    ok, reason = False, f"check failed: {type(exc).__name__}"
                if not ok:
                    ready = False
                    reason = reason if reason != "ok" else "dependency not ready"
                    break
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    return [web.get("/metrics", metrics), web.get("/healthz", healthz), web.get("/readyz", readyz)]


async def start_http(*, health: Health, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve the observability routes on their own port; returns the runner and the bound port."""
    app = web.Application()
    app.add_routes(http_routes(health))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        bound = int(address[1])
        break
    return runner, bound
