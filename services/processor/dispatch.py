"""Per-handler bulkheads with a priority backlog.

Each handler deployment (a StreamerHandler: namespace/name) gets its own *lane*:
at most ``limit`` requests run at once — ``ActionSpec.concurrency`` when the
handler declares it, else ``settings.handler_concurrency`` — so one slow or
overloaded handler cannot take every slot of the processor and starve the others.
The limit is the cluster's: each processor runs its share of it (``share``, from
:mod:`.membership`).
Claimed requests beyond the limit wait in the lane, one queue per tenant taken in
turn (round-robin: a tenant's burst never starves another tenant on the same
handler); within a tenant, higher ``priority`` first, then older requests
(``created_at``), then arrival order, so equal priorities stay FIFO.

The dispatcher does not know what running a job means; it is given ``run``.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable

from services.processor.jobs import Job, JobState
from streamer.registry import ActionSpec, Registry
from streamer.tasks import TaskSet

log = logging.getLogger(__name__)

RunJob = Callable[[Job], Awaitable[None]]
#: A lane refuses direct offers (backpressure) once running + waiting reach this many
#: times its limit; the stream path still queues (it has nowhere else to send them).
OFFER_BACKLOG_FACTOR = 2
_UNKNOWN_LANE = "?"


def lane_key(spec: ActionSpec | None, action: str) -> str:
    """The bulkhead a request belongs to: its handler deployment (or its unknown action)."""
    if spec is None:
        return f"{_UNKNOWN_LANE}{action}"
    return f"{spec.namespace}/{spec.handler}"


class Lane:
    """One handler's bulkhead: a concurrency limit, and waiting jobs taken fairly by tenant.

    Each tenant's waiting jobs are a priority heap (higher ``priority`` first, then
    older, then arrival order); the lane takes from the tenants in turn (round-robin),
    so one tenant's burst of thousands cannot starve another tenant's requests on the
    same handler: the other tenant's next job starts within one turn. ``priority``
    orders a tenant's own requests.
    """

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.limit = limit
        self.running = 0
        self._heaps: dict[str, list[tuple[int, float, int, Job]]] = {}
        #: Tenants with waiting jobs, in the order they take their next turn.
        self._turns: collections.deque[str] = collections.deque()
        self._entries = 0  # heap entries, removed-while-queued ones included
        self._order = itertools.count()

    def push(self, job: Job) -> None:
        record = job.record
        tenant = record.tenant_id
        heap = self._heaps.get(tenant)
        if heap is None:
            heap = self._heaps[tenant] = []
            self._turns.append(tenant)
        heapq.heappush(heap, (-record.priority, record.created_at, next(self._order), job))
        self._entries += 1

    def pop(self) -> Job | None:
        """The next waiting job of the tenant whose turn it is (jobs removed while queued are skipped)."""
        while self._turns:
            tenant = self._turns.popleft()
            heap = self._heaps[tenant]
            found: Job | None = None
            while heap and found is None:
                job = heapq.heappop(heap)[3]
                self._entries -= 1
                if job.state is JobState.QUEUED:
                    found = job
            if heap:
                self._turns.append(tenant)  # back of the line
            else:
                del self._heaps[tenant]
            if found is not None:
                return found
        return None

    def waiting(self) -> list[Job]:
        entries = sorted(entry for heap in self._heaps.values() for entry in heap)
        return [entry[3] for entry in entries if entry[3].state is JobState.QUEUED]

    def clear(self) -> list[Job]:
        jobs = self.waiting()
        self._heaps.clear()
        self._turns.clear()
        self._entries = 0
        return jobs

    def __len__(self) -> int:
        return sum(1 for heap in self._heaps.values() for entry in heap if entry[3].state is JobState.QUEUED)

    @property
    def tenants(self) -> int:
        """Tenants with jobs waiting here."""
        return len(self._heaps)

    @property
    def load(self) -> int:
        """Running plus waiting (waiting counted from above, in O(1))."""
        return self.running + self._entries


class Dispatcher:
    """Routes claimed jobs into lanes and starts them as slots free up."""

    def __init__(
        self,
        *,
        registry: Registry,
        default_limit: int,
        run: RunJob,
        share: Callable[[int, str], int] | None = None,
    ) -> None:
        self.registry = registry
        self.default_limit = default_limit
        self.run = run
        #: This processor's part of a lane's cluster-wide limit (see membership.py).
        self.share = share
        self.lanes: dict[str, Lane] = {}
        #: Every job task (and hand-backs the drain must wait for).
        self.tasks = TaskSet()

    def lane_of(self, action: str) -> tuple[str, int]:
        """(lane key, concurrency limit) of ``action``, following the registry."""
        spec = self.registry.lookup(action)
        key = lane_key(spec, action)
        limit = (spec.concurrency if spec and spec.concurrency else None) or self.default_limit
        return key, self.share(limit, key) if self.share is not None else limit

    def submit(self, job: Job) -> None:
        key, limit = self.lane_of(job.action)
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = Lane(key, limit)
        lane.limit = limit  # follow registry changes
        lane.push(job)
        self._pump(lane)

    def lane_load(self, action: str) -> tuple[str, int, int]:
        """(lane key, running + waiting, the offer limit: ``OFFER_BACKLOG_FACTOR * limit``) of ``action``."""
        key, limit = self.lane_of(action)
        lane = self.lanes.get(key)
        return key, lane.load if lane is not None else 0, OFFER_BACKLOG_FACTOR * limit

    def _pump(self, lane: Lane) -> None:
        while lane.running < lane.limit:
            job = lane.pop()
            if job is None:
                return
            job.state = JobState.RUNNING
            lane.running += 1
            self.tasks.spawn(self._run(lane, job), name=f"job-{job.request_id}")

    async def _run(self, lane: Lane, job: Job) -> None:
        try:
            await self._run_unlimited(job)
        finally:
            lane.running -= 1
            self._pump(lane)

    def start_now(self, job: Job) -> None:
        """Run a queued job outside its bulkhead (a cancel: no handler call is made)."""
        if job.state is not JobState.QUEUED:
            return
        job.state = JobState.RUNNING
        self.tasks.spawn(self._run_unlimited(job), name=f"job-{job.request_id}")

    async def _run_unlimited(self, job: Job) -> None:
        try:
            await self.run(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job crashed", extra={"request_id": job.request_id})
        finally:
            job.state = JobState.DONE

    def take_queued(self) -> list[Job]:
        """Remove and return every job still waiting (drain: they are handed back)."""
        jobs: list[Job] = []
        for lane in self.lanes.values():
            jobs.extend(lane.clear())
        for job in jobs:
            job.state = JobState.DONE
        return jobs

    @property
    def queued(self) -> int:
        return sum(len(lane) for lane in self.lanes.values())

    @property
    def backlog(self) -> int:
        """Waiting jobs, counted from above in O(lanes) (entries removed while queued included)."""
        return sum(lane.load - lane.running for lane in self.lanes.values())

    @property
    def running(self) -> int:
        return sum(lane.running for lane in self.lanes.values())

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no job runs (or ``timeout``); True when idle."""
        if not len(self.tasks):
            return True
        _, pending = await asyncio.wait(list(self.tasks), timeout=timeout)
        return not pending

    def cancel_all(self) -> None:
        self.tasks.cancel()
