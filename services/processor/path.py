"""The path one request takes through a processor, owned by one object.

::

    stream records ─▶ on_records ─┐
    Processor.Offer (offers.py) ──┼─▶ Claimer.offer ─▶ claimed: a Job, held by the ClaimKeeper
    Sweeper ──────────────────────┘        (claims.py)        │
                                                              ▼
                            Dispatcher (a lane per handler, dispatch.py) ─▶ Invoker.run (invoke.py)
                                                              │   handler call, progress, the ending
    ClaimKeeper renews every held claim; a cancel or a lost claim stops the job
    (a job still queued is settled at once, outside its bulkhead).

:class:`RequestPath` builds the claimer, the keeper, the dispatcher and the invoker
and is the only place that connects them: the stream reader hands it records
(:meth:`RequestPath.on_records`), the offer servicer and the sweeper call its
claimer. ``service.py`` only wires the path to the stream, the offers and the
sweeper, and orders start and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from services.processor.budget import ClaimBudget, Slot
from services.processor.claims import (
    Candidate,
    Claimer,
    ClaimKeeper,
    cancel_from_record,
    candidate_from_record,
    settled_from_record,
    subscribed_from_record,
)
from services.processor.dispatch import Dispatcher
from services.processor.fanout import Fanout
from services.processor.invoke import Invoker
from services.processor.jobs import Job, JobState, StopReason
from streamer.config import Settings
from streamer.handler_client import HandlerClient
from streamer.registry import Registry
from streamer.retry import Backoff
from streamer.store import Store
from streamer.store.requests import RequestRecord

log = logging.getLogger(__name__)

#: Claims one batch of stream records attempts at once.
CLAIM_CONCURRENCY = 32


class RequestPath:
    """Records → claim → job → bulkhead → handler call and ending (see the module doc)."""

    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        fanout: Fanout,
        settings: Settings,
        worker_id: str,
        backoff: Backoff,
        handlers: HandlerClient,
        share: Callable[[int, str], int] | None = None,
    ) -> None:
        #: False before start and from the moment shutdown begins: a claim won then is
        #: handed straight back.
        self.accepting = False
        self.keeper = ClaimKeeper(
            requests=store.requests,
            worker_id=worker_id,
            claim_seconds=settings.claim_seconds,
            on_stop=self._job_stopped,
        )
        self.dispatcher = Dispatcher(
            registry=registry, default_limit=settings.handler_concurrency, run=self._run, share=share
        )
        #: How many claims this processor may hold (per processor, lane and tenant).
        self.budget = ClaimBudget(lane_of=self.dispatcher.lane_of)
        self.claimer = Claimer(
            requests=store.requests,
            worker_id=worker_id,
            claim_seconds=settings.claim_seconds,
            on_claimed=self._claimed,
            budget=self.budget,
        )
        self.invoker = Invoker(
            store=store,
            registry=registry,
            fanout=fanout,
            keeper=self.keeper,
            settings=settings,
            worker_id=worker_id,
            backoff=backoff,
            handlers=handlers,
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.keeper.start()
        self.accepting = True

    def stop_accepting(self) -> None:
        """From now on a won claim is handed straight back (shutdown began)."""
        self.accepting = False

    async def drain(self, seconds: float) -> None:
        """Claim nothing more; hand queued jobs back; let running ones finish for ``seconds``.

        Jobs still running then are stopped (``SHUTDOWN``: handed back), and whatever
        does not end within 10 s more is cancelled.
        """
        self.accepting = False
        self.claimer.stop()
        for job in self.dispatcher.take_queued():
            await self.invoker.hand_back(job)
        if not await self.dispatcher.wait_idle(seconds):
            for job in list(self.keeper.jobs.values()):
                if job.state is JobState.RUNNING:
                    job.request_stop(StopReason.SHUTDOWN)
            await self.dispatcher.wait_idle(10.0)
            self.dispatcher.cancel_all()
        await self.keeper.stop()

    def stop_claiming(self) -> None:
        """Claim nothing more, at once (a crash: nothing is handed back)."""
        self.accepting = False
        self.claimer.stop()

    async def abort(self) -> None:
        """Cancel every job with no writes (what a killed process leaves behind)."""
        self.dispatcher.cancel_all()
        await self.keeper.stop()
        await self.dispatcher.tasks.wait()

    # ------------------------------------------------------------------ the path

    async def on_records(self, shard_id: str, records: list[dict[str, Any]]) -> None:
        """A batch from a shard: claim what needs claiming (the checkpoint follows).

        Records of one item come in order on one shard, so a request's claim record
        follows its INSERT: a candidate the router offered (``offer_until``) is held
        until then and dropped when its claim shows up — here in the same batch, or
        in a later one through :meth:`Claimer.settle` — with no claim attempt of ours.
        """
        pending: dict[tuple[str, int], Candidate] = {}
        for record in records:
            settled = settled_from_record(record)
            if settled is not None:
                pending.pop(settled, None)
                self.claimer.settle(*settled)
            cand = candidate_from_record(record)
            if cand is not None:
                pending[(cand.request_id, cand.attempt)] = cand  # the last one wins
                continue
            signal = cancel_from_record(record)
            if signal is not None:
                self.keeper.signal_cancel(signal)
            subscribed = subscribed_from_record(record)
            if subscribed is not None:
                self.keeper.note_subscribed(subscribed)
        candidates = list(pending.values())
        if not candidates:
            return
        sem = asyncio.Semaphore(CLAIM_CONCURRENCY)

        async def offer(cand: Candidate) -> None:
            async with sem:
                await self.claimer.offer(cand)

        await asyncio.gather(*(offer(c) for c in candidates))

    async def _run(self, job: Job) -> None:
        await self.invoker.run(job)

    def _claimed(self, record: RequestRecord, slot: Slot | None = None) -> None:
        # An earlier job of ours for this request (its claim lapsed; our sweeper
        # released it and our claimer won it back) is stopped by the keeper, and this
        # one waits for it to end before calling the handler.
        job = Job(
            record,
            claimed_at=asyncio.get_running_loop().time(),
            predecessor=self.keeper.jobs.get(record.request_id),
            slot=slot,
        )
        self.keeper.add(job)
        if not self.accepting:
            # Claimed while we began draining: give it straight back.
            job.state = JobState.DONE
            self.dispatcher.tasks.spawn(self.invoker.hand_back(job))
            return
        self.dispatcher.submit(job)

    def _job_stopped(self, job: Job) -> None:
        """A held job was cancelled or lost: if it is still queued, settle it now, outside its bulkhead."""
        if job.state is JobState.QUEUED and self.accepting:
            self.dispatcher.start_now(job)
