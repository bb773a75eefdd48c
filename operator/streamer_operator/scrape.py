"""The backlog autoscaler's reading: what the queue's processors export on ``/metrics``.

Processors measure their queue per handler (``services/processor/backlog.py``):
``streamer_processor_backlog`` and ``streamer_processor_oldest_pending_seconds`` (each
processor of a queue measures the same table: the highest reading is taken) and
``streamer_processor_in_flight`` (its own claims: summed over processors), labelled
with the ``queue`` (the requests table) and the ``handler``.

:class:`ProcessorMetrics` finds the pods of a queue's processors through the API
server — the shared queue's by ``STREAMER_OPERATOR_PROCESSOR_POD_LABELS`` in
``STREAMER_OPERATOR_PROCESSOR_NAMESPACE``, a dedicated queue's by its own
Deployment's labels in the handler's namespace — and reads ``/metrics`` on each
running pod's ``http`` port. One listing and one scrape per pod serve every handler
for ``cache_seconds``. When no pod of the queue reports it (none runs — a queue scaled
to zero — or none answers), :meth:`ProcessorMetrics.backlog` returns None and the
autoscaler measures the table itself (:func:`streamer_operator.autoscale.measure`),
so the first request still wakes a handler from zero.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from streamer_operator import children
from streamer_operator.autoscale import Backlog
from streamer_operator.kube import ApiError, Kube

log = logging.getLogger(__name__)

PODS = children.Ref("", "v1", "pods", "Pod")
BACKLOG = "streamer_processor_backlog"
OLDEST = "streamer_processor_oldest_pending_seconds"
IN_FLIGHT = "streamer_processor_in_flight"
DEFAULT_PORT = 9090

Sample = tuple[str, dict[str, str], float]


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_target(pod: Mapping[str, Any]) -> str | None:
    """``host:port`` of a running pod's ``http`` port, or None."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or status.get("phase", "Running") != "Running":
        return None
    port = DEFAULT_PORT
    for container in (pod.get("spec") or {}).get("containers") or []:
        for item in container.get("ports") or []:
            if item.get("name") == "http" and item.get("containerPort"):
                port = int(item["containerPort"])
    return f"{ip}:{port}"


def parse(text: str) -> list[Sample]:
    """The samples of the three backlog families in a /metrics page."""
    wanted = {BACKLOG, OLDEST, IN_FLIGHT}
    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        if family.name in wanted
        for sample in family.samples
    ]


def reading(pages: list[list[Sample]], *, queue: str, handler: str) -> Backlog | None:
    """The handler's backlog from the processors' pages; None when none reports the queue."""
    reported = False
    pending = 0.0
    oldest = 0.0
    in_flight = 0.0
    for samples in pages:
        for name, labels, value in samples:
            if labels.get("queue") != queue:
                continue
            if name == BACKLOG:
                reported = True
            if labels.get("handler") != handler:
                continue
            if name == BACKLOG:
                pending = max(pending, value)
            elif name == OLDEST:
                oldest = max(oldest, value)
            elif name == IN_FLIGHT:
                in_flight += value
    if not reported:
        return None
    return Backlog(pending=int(pending), in_flight=int(in_flight), oldest_seconds=oldest, source="processors")


class ProcessorMetrics:
    """Reads the backlog the processors export; caches each queue's pages briefly."""

    def __init__(
        self,
        kube: Kube,
        *,
        shared_namespace: str,
        shared_labels: Mapping[str, str],
        cache_seconds: float = 5.0,
        timeout_seconds: float = 2.0,
    ) -> None:
        self.kube = kube
        self.shared_namespace = shared_namespace
        self.shared_labels = dict(shared_labels)
        self.cache_seconds = cache_seconds
        self.timeout_seconds = timeout_seconds
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, list[list[Sample]]]] = {}

    def where(
        self, body: Mapping[str, Any], *, dedicated: bool, labels: Mapping[str, str]
    ) -> tuple[str, dict[str, str]] | None:
        """Namespace and labels of the pods of the handler's queue (None: unknown)."""
        if dedicated:
            return children.namespace_of(body), dict(labels)
        if not self.shared_labels or not self.shared_namespace:
            return None
        return self.shared_namespace, self.shared_labels

    async def backlog(
        self, body: Mapping[str, Any], *, queue: str, dedicated: bool, labels: Mapping[str, str]
    ) -> Backlog | None:
        place = self.where(body, dedicated=dedicated, labels=labels)
        if place is None:
            return None
        pages = await self._pages(*place)
        return reading(pages, queue=queue, handler=children.name_of(body))

    async def _pages(self, namespace: str, labels: Mapping[str, str]) -> list[list[Sample]]:
        key = (namespace, tuple(sorted(labels.items())))
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        try:
            listing = await self.kube.list(PODS, namespace, label_selector=selector)
        except ApiError as exc:
            log.warning(
                "could not list the processors' pods", extra={"namespace": namespace, "error": str(exc)}
            )
            return []
        targets = [
            target
            for pod in listing
            if _matches((pod.get("metadata") or {}).get("labels") or {}, labels)
            and (target := pod_target(pod)) is not None
        ]
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds)
        ) as session:
            scraped = await asyncio.gather(*(self._scrape(session, t) for t in targets))
        pages = [page for page in scraped if page is not None]
        self._cache[key] = (time.monotonic(), pages)
        return pages

    async def _scrape(self, session: aiohttp.ClientSession, target: str) -> list[Sample] | None:
        try:
            async with session.get(f"http://{target}/metrics") as resp:
                if resp.status != 200:
                    return None
                return parse(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.info("a processor's /metrics did not answer", extra={"target": target, "error": repr(exc)})
            return None
