"""The queue's backlog per handler, exported on ``/metrics`` for autoscalers.

Every ``STREAMER_BACKLOG_INTERVAL_SECONDS`` (±20 % jitter) a processor measures its
queue (the requests table it consumes, the ``queue`` label):

- ``streamer_processor_backlog{queue,handler}``: PENDING requests of each handler, and
  ``streamer_processor_oldest_pending_seconds{queue,handler}``: the oldest one's age —
  one query of the status index, projected to two attributes and paged (its cost grows
  with the backlog, like the sweeper's PENDING query; nothing is read per request). One
  processor of the queue measures: the one holding the stream's first live shard lease
  (by key, as its coordinator last read them; any processor while none is held), so the
  cost is once per queue per interval, not once per processor. The others export no
  backlog series; during a hand-over two may for a round: take ``max`` over processors;
- ``streamer_processor_in_flight{queue,handler}``: the requests this process holds a claim
  on (its own jobs, no read at all): take ``sum`` over processors.

A handler whose backlog drops to nothing reads 0 (its series stays until the process
ends). A failed measurement removes the queue's backlog series, so a reader never takes
an old number for a current one (the operator then measures the table itself).
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable, Iterable

from services.processor.jobs import Job
from streamer.metrics import gauge
from streamer.store.errors import StoreError
from streamer.store.requests import PENDING, RequestStore
from streamer.tasks import Background, every

log = logging.getLogger(__name__)

BACKLOG = gauge(
    "streamer_processor_backlog",
    "PENDING requests of a handler in this processor's queue (the backlog), as last measured; "
    "every processor of a queue measures the same table (take max).",
    ["queue", "handler"],
)
OLDEST_PENDING = gauge(
    "streamer_processor_oldest_pending_seconds",
    "Age of a handler's oldest PENDING request in this processor's queue, as last measured (take max).",
    ["queue", "handler"],
)
IN_FLIGHT = gauge(
    "streamer_processor_in_flight",
    "Requests of a handler this processor holds a claim on (take sum over processors).",
    ["queue", "handler"],
)


class BacklogMeter:
    """Measures the backlog of one queue table and publishes it with this process's in-flight."""

    def __init__(
        self,
        *,
        requests: RequestStore,
        jobs: Callable[[], Iterable[Job]],
        interval: float,
        leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.requests = requests
        self.queue = requests.table
        self.jobs = jobs
        self.leader = leader
        self.interval = interval
        self.clock = clock
        self.measured = 0
        self._backlog_handlers: set[str] = set()
        self._flight_handlers: set[str] = set()
        self._loop = Background(f"backlog-{self.queue}")

    async def measure_once(self) -> dict[str, tuple[int, float]]:
        """One measurement, published; returns {handler: (pending, oldest age)}.

        Not this processor's turn (:attr:`leader`): in-flight only, and no backlog series."""
        self._publish_in_flight()
        if not self.leader():
            self._forget_backlog()
            return {}
        try:
            counts = await self.requests.count_by_handler(PENDING)
        except StoreError:
            self._forget_backlog()
            raise
        now = self.clock()
        out = {handler: (count, max(0.0, now - oldest)) for handler, (count, oldest) in counts.items()}
        for handler in self._backlog_handlers - set(out):
            out[handler] = (0, 0.0)
        for handler, (count, age) in out.items():
            BACKLOG.labels(self.queue, handler).set(count)
            OLDEST_PENDING.labels(self.queue, handler).set(age)
        self._backlog_handlers = set(out)
        self.measured += 1
        return out

    def _publish_in_flight(self) -> None:
        counts = collections.Counter(job.record.handler for job in list(self.jobs()))
        for handler in self._flight_handlers - set(counts):
            counts[handler] = 0
        for handler, count in counts.items():
            IN_FLIGHT.labels(self.queue, handler).set(count)
        self._flight_handlers = set(counts)

    def _forget_backlog(self) -> None:
        for handler in self._backlog_handlers:
            for metric in (BACKLOG, OLDEST_PENDING):
                try:
                    metric.remove(self.queue, handler)
                except KeyError:
                    pass
        self._backlog_handlers = set()

    def start(self) -> None:
        self._loop.start(self._run())

    async def _run(self) -> None:
        try:
            await self.measure_once()  # at once: a processor that just woke up reports at once
        except Exception:
            log.warning("backlog measurement failed", exc_info=True)
        jitter = random.Random()
        await every(
            lambda: self.interval * jitter.uniform(0.8, 1.2),
            self.measure_once,
            what="backlog measurement",
            logger=log,
        )

    async def stop(self) -> None:
        await self._loop.stop()
