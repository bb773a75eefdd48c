"""Backlog-driven autoscaling: how many handler pods a queue's backlog calls for.

``spec.autoscaling.metric: backlog`` scales a handler (and its dedicated processors)
on the work waiting for it instead of CPU: the requests of the handler that are
PENDING (the backlog) plus PROCESSING (in flight), read from the status index of its
queue table on every autoscaling tick. The wanted count is
``ceil((backlog + in flight) / targetBacklogPerReplica)`` between ``minReplicas`` and
``maxReplicas``; with ``minReplicas: 0`` an idle handler goes to zero pods and the
first request wakes it (it waits PENDING meanwhile, Serving stays True).

Stabilisation works as the HPA's ``behavior``: a scale-up uses the *lowest*
recommendation of the last ``scaleUpStabilizationSeconds`` (0: at once), a scale-down
the *highest* of the last ``scaleDownStabilizationSeconds`` (default 300 s), so a
short lull never drops pods that the next burst needs.

``spec.autoscaling.external: true`` leaves the count to someone else: HPA or KEDA
scale the StreamerHandler through its ``scale`` subresource (``spec.replicas``) and the
operator copies that to the Deployment.

:func:`recommend` and :func:`decide` are pure and unit-tested; :func:`measure` reads DynamoDB.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

from streamer import metrics

CPU = "cpu"
BACKLOG = "backlog"
EXTERNAL = "external"
NONE = "none"
DEFAULT_TARGET_BACKLOG = 10
DEFAULT_UP_SECONDS = 0.0
DEFAULT_DOWN_SECONDS = 300.0

BACKLOG_GAUGE = metrics.gauge(
    "streamer_operator_handler_backlog",
    "PENDING requests of a handler (its backlog), as the operator's autoscaler last read them.",
    ["namespace", "handler"],
)
OLDEST_GAUGE = metrics.gauge(
    "streamer_operator_handler_oldest_pending_seconds",
    "Age of a handler's oldest PENDING request, as the autoscaler last read it.",
    ["namespace", "handler"],
)
IN_FLIGHT_GAUGE = metrics.gauge(
    "streamer_operator_handler_in_flight",
    "PROCESSING requests of a handler, as the autoscaler last read them.",
    ["namespace", "handler"],
)
READINGS = metrics.counter(
    "streamer_operator_backlog_readings_total",
    "Backlog readings of the autoscaler by source: processors (their /metrics), index (the "
    "operator queried the status index itself: no processor of the queue reported it), failed.",
    ["source"],
)
DESIRED_GAUGE = metrics.gauge(
    "streamer_operator_handler_desired_replicas",
    "Handler pods the backlog autoscaler asks for.",
    ["namespace", "handler"],
)


def scaling_of(body: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = (body.get("spec") or {}).get("autoscaling")
    return raw if isinstance(raw, Mapping) else {}


def mode_of(body: Mapping[str, Any]) -> str:
    """none (spec.replicas), cpu (an HPA), backlog (the operator), external (HPA/KEDA on /scale)."""
    scaling = scaling_of(body)
    if not scaling:
        return NONE
    if scaling.get("external"):
        return EXTERNAL
    return BACKLOG if scaling.get("metric") == BACKLOG else CPU


@dataclasses.dataclass(frozen=True)
class Policy:
    minimum: int
    maximum: int
    target: int = DEFAULT_TARGET_BACKLOG
    up_seconds: float = DEFAULT_UP_SECONDS
    down_seconds: float = DEFAULT_DOWN_SECONDS

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Policy:
        s = scaling_of(body)
        minimum = int(s.get("minReplicas", 1) if s.get("minReplicas") is not None else 1)
        return cls(
            minimum=minimum,
            maximum=max(minimum, int(s.get("maxReplicas") or max(minimum, 1))),
            target=max(1, int(s.get("targetBacklogPerReplica") or DEFAULT_TARGET_BACKLOG)),
            up_seconds=float(s.get("scaleUpStabilizationSeconds") or DEFAULT_UP_SECONDS),
            down_seconds=float(
                DEFAULT_DOWN_SECONDS
                if s.get("scaleDownStabilizationSeconds") is None
                else s["scaleDownStabilizationSeconds"]
            ),
        )


@dataclasses.dataclass(frozen=True)
class Backlog:
    pending: int
    in_flight: int
    oldest_seconds: float = 0.0
    # Where the reading came from: "processors" (their /metrics) or "index" (the table).
    source: str = "index"


def recommend(backlog: Backlog, policy: Policy) -> int:
    """Pods for this much work right now, within [minimum, maximum]."""
    load = backlog.pending + backlog.in_flight
    if load == 0:
        return policy.minimum
    return min(policy.maximum, max(policy.minimum, 1, math.ceil(load / policy.target)))


def decide(current: int, history: list[tuple[float, int]], *, now: float, policy: Policy) -> int:
    """The count to run, from the current one and recent recommendations (newest last).

    Up: the lowest recommendation within the up window (never below ``current``).
    Down: the highest within the down window (never above ``current``).
    """
    if not history:
        return max(policy.minimum, min(policy.maximum, current))
    latest = history[-1][1]
    if latest > current:
        window = [r for t, r in history if t >= now - policy.up_seconds] or [latest]
        return max(current, min(window))
    if latest < current:
        window = [r for t, r in history if t >= now - policy.down_seconds] or [latest]
        return min(current, max(window))
    return current


class Autoscaler:
    """Keeps each handler's recent recommendations and turns them into a count."""

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self._history: dict[tuple[str, str], list[tuple[float, int]]] = {}

    def forget(self, key: tuple[str, str]) -> None:
        self._history.pop(key, None)

    def step(self, key: tuple[str, str], *, current: int, backlog: Backlog, policy: Policy) -> int:
        now = float(self.clock())
        history = self._history.setdefault(key, [])
        history.append((now, recommend(backlog, policy)))
        horizon = now - max(policy.up_seconds, policy.down_seconds) - 1.0
        while len(history) > 1 and history[0][0] < horizon:
            history.pop(0)
        wanted = decide(current, history, now=now, policy=policy)
        namespace, name = key
        BACKLOG_GAUGE.labels(namespace, name).set(backlog.pending)
        IN_FLIGHT_GAUGE.labels(namespace, name).set(backlog.in_flight)
        OLDEST_GAUGE.labels(namespace, name).set(backlog.oldest_seconds)
        DESIRED_GAUGE.labels(namespace, name).set(wanted)
        return wanted


async def measure(client: Any, table: str, *, handler: str, now: float | None = None) -> Backlog:
    """PENDING and PROCESSING requests of ``handler`` in ``table`` (the status index).

    The fallback when no processor of the queue reports it (none runs: scale from zero).
    """
    from streamer.store.requests import PENDING, PROCESSING, RequestStore

    wall = time.time() if now is None else now
    store = RequestStore(client, table)
    pending, oldest = (await store.count_by_handler(PENDING, handler=handler)).get(handler, (0, wall))
    in_flight, _ = (await store.count_by_handler(PROCESSING, handler=handler)).get(handler, (0, wall))
    return Backlog(pending=pending, in_flight=in_flight, oldest_seconds=max(0.0, wall - oldest))
