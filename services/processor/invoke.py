"""Run one claimed request: wait for an earlier run, call the handler, end the attempt.

:class:`Invoker` is the dispatcher's ``run``. It is the order of things only; the
two halves live apart:

- :mod:`.attempt` — the call: :class:`~services.processor.attempt.HandlerCall`
  streams the handler's events (progress to the reporter) into one ``Outcome``;
- :mod:`.ending` — the ending policy: :func:`~services.processor.ending.decide`
  (retry, fail, cancel, complete, or the job stopped) and
  :class:`~services.processor.ending.EndingPolicy`'s one conditional write and final
  frame (the table of endings is there).

Before the call: an earlier run of ours for the request (its claim lapsed) must have
ended; a request recovered more than ``max_recoveries`` times fails without another
call; a job asked to stop while queued ends without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from services.processor import metrics
from services.processor.attempt import HandlerCall, start_seq
from services.processor.claims import ClaimKeeper
from services.processor.ending import EndingPolicy, too_many_recoveries
from services.processor.fanout import Fanout
from services.processor.jobs import Job, StopReason
from services.processor.progress import ProgressReporter
from streamer import tracing
from streamer.config import Settings
from streamer.handler_client import HandlerClient
from streamer.logs import log_context
from streamer.registry import Registry
from streamer.retry import Backoff
from streamer.store import Store
from streamer.store.errors import TransitionRefused

log = logging.getLogger(__name__)


class Invoker:
    """Runs jobs (the dispatcher's ``run``): the handler call, then the attempt's ending."""

    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        fanout: Fanout,
        keeper: ClaimKeeper,
        settings: Settings,
        worker_id: str,
        backoff: Backoff | None = None,
        handlers: HandlerClient | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.fanout = fanout
        self.keeper = keeper
        self.settings = settings
        self.worker_id = worker_id
        self.call = HandlerCall(handlers or HandlerClient(max_message_bytes=settings.grpc_max_message_bytes))
        self.ending = EndingPolicy(
            store=store,
            fanout=fanout,
            keeper=keeper,
            settings=settings,
            worker_id=worker_id,
            backoff=backoff or Backoff(),
        )

    async def run(self, job: Job) -> None:
        with (
            log_context(request_id=job.request_id, connection_id=job.record.connection_id or None),
            tracing.request_span(
                f"process {job.action}",
                traceparent=job.record.traceparent,
                request_id=job.request_id,
                action=job.action,
                attributes={"streamer.attempt": job.attempt},
            ),
        ):
            try:
                await self._run(job)
            finally:
                self.keeper.remove(job)
                self.fanout.forget(job.request_id)
                job.finished.set()

    async def _run(self, job: Job) -> None:
        loop = asyncio.get_running_loop()
        if job.record.cancel_requested:
            job.request_stop(StopReason.CANCEL)
        if job.predecessor is not None and not job.predecessor.finished.is_set():
            # Our own earlier run of this request was stopped (its claim lapsed): let
            # it end before the handler is called again, so two runs never overlap.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.predecessor.finished.wait(), timeout=self.settings.claim_seconds)
        job.predecessor = None
        if job.stop_reason is not None:
            await self.ending.stopped(job, reporter=None)
            return
        if job.record.recoveries > self.settings.max_recoveries:
            await self.ending.fail(job, too_many_recoveries(job, limit=self.settings.max_recoveries))
            return
        spec = self.registry.lookup(job.action)
        metrics.QUEUE_WAIT.observe(max(0.0, loop.time() - job.claimed_at))
        reporter = ProgressReporter(
            request_id=job.client_request_id,
            publish=lambda frame: self.fanout.publish(job.record, frame),
            persist=lambda progress: self._persist(job, progress),
            interval=self.settings.progress_interval_seconds,
            start_seq=start_seq(job.record.progress, recoveries=job.record.recoveries),
            created_at=job.record.created_at,
        )
        started = loop.time()
        try:
            outcome = await self.call.run(job, spec, reporter)
        except asyncio.CancelledError:
            await reporter.close(flush=False)  # aborted: no writes, no frames
            raise
        metrics.PROCESSING_DURATION.labels(job.action).observe(loop.time() - started)
        await self.ending.settle(job, outcome, reporter)

    async def _persist(self, job: Job, progress: dict[str, Any]) -> None:
        """Save the attempt's progress (the reporter's ``persist``); refused: our claim is gone."""
        try:
            job.record = await self.store.requests.save_progress(
                job.request_id, owner=self.worker_id, attempt=job.attempt, token=job.token, progress=progress
            )
        except TransitionRefused:
            job.request_stop(StopReason.LOST)

    async def hand_back(self, job: Job, *, progress: dict[str, Any] | None = None) -> None:
        """Give a claimed request back (PENDING, same attempt) for another processor."""
        await self.ending.hand_back(job, progress=progress)
