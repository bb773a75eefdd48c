"""Run one claimed request on its handler and record how it ended.

The handler's ``Invoke`` is a server stream: progress events, then exactly one
``result`` or ``error``. The call's deadline is the action's ``timeout``
(``ActionSpec.timeout``: what the handler declared, and what its SDK enforces on
its side too). How each ending is recorded — every write conditional on
(PROCESSING, owner = us, attempt), so only a live claim can write:

==========================================  ==========================================
ending                                      what happens
==========================================  ==========================================
``result``                                  ``complete()`` (with the last progress),
                                            then a ``complete`` frame
``error``, retryable, attempts left         ``retry()``: PENDING at attempt + 1, not
                                            before ``now + backoff`` (no frame)
``error``, not retryable or last attempt    ``fail()``, then an ``error`` frame:
                                            ``PROCESSING_FAILED`` (``VALIDATION_ERROR``
                                            when the handler refused the payload)
deadline passed (or the handler's own       as a retryable error with code ``TIMEOUT``;
``TIMEOUT``)                                the final error code is ``TIMEOUT``
handler unreachable (``UNAVAILABLE``,       retryable (a rollout, a crashed pod);
no ready handler for the action, stream     final code ``PROCESSING_FAILED``
ended without an ending)
cancel requested                            the gRPC call is cancelled (the SDK cancels
                                            the work), ``finish_cancel()``, then an
                                            ``error`` frame ``CANCELLED``
claim lost (another processor took over,    the call is cancelled; nothing is written
or our claim lapsed unrenewed)              or sent — the new owner reports instead
a ``result`` over ``max_result_bytes``,     ``fail()`` with ``RESULT_TOO_LARGE`` at once
or one DynamoDB refuses as too large        (another attempt would return the same)
recovered more than ``max_recoveries``      ``fail()`` with ``PROCESSING_FAILED``
times (its claims kept lapsing)             before calling the handler again
processor draining past ``drain_seconds``   the call is cancelled and the request
                                            handed back (``release``: PENDING, same
                                            attempt) for another processor
==========================================  ==========================================

A refused write (:class:`TransitionRefused`) always means someone else decided
this request's fate first; the job then sends nothing. That is why a request
is never completed twice even when two processors ran it. (A write that landed
but whose answer was lost is not refused: the store recognises its own write on
the SDK's retry, so the ``complete`` is still sent.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable
from typing import Any

import grpc

from services.processor import metrics
from services.processor.claims import ClaimKeeper
from services.processor.fanout import Fanout
from services.processor.jobs import Job, StopReason
from services.processor.progress import ProgressReporter
from streamer import tracing
from streamer.config import Settings
from streamer.handler_client import Failure, HandlerClient, Invocation, Progress, Result
from streamer.logs import log_context
from streamer.protocol import (
    CANCELLED,
    INTERNAL_ERROR,
    PROCESSING_FAILED,
    RESULT_TOO_LARGE,
    SERVICE_UNAVAILABLE,
    TIMEOUT,
    VALIDATION_ERROR,
    CompleteMessage,
    ErrorMessage,
    complete_message,
    error_message,
)
from streamer.registry import ActionSpec, Registry
from streamer.retry import Backoff
from streamer.store import Store
from streamer.store.errors import ItemTooLarge, StoreError, TransitionRefused
from streamer.store.requests import RequestRecord

log = logging.getLogger(__name__)

#: Handler error codes passed through to the client as they are when final.
PASS_THROUGH_CODES = frozenset({VALIDATION_ERROR, RESULT_TOO_LARGE})


class Kind(enum.Enum):
    RESULT = "result"
    ERROR = "error"
    STOPPED = "stopped"
    #: The processor ends the request itself (a result too large, too many recoveries).
    REFUSED = "refused"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """How one attempt ended, before anything was written."""

    kind: Kind
    result: Any = None
    code: str = ""
    message: str = ""
    details: Any = None
    retryable: bool = False
    #: Bytes of the handler's JSON result (``RESULT`` only).
    size: int = 0

    @property
    def timed_out(self) -> bool:
        return self.kind is Kind.ERROR and self.code == TIMEOUT


def outcome_from_failure(failure: Failure) -> Outcome:
    return Outcome(
        kind=Kind.ERROR,
        code=failure.code,
        message=failure.message,
        details=failure.details,
        retryable=failure.retryable,
    )


def final_error(outcome: Outcome, *, attempt: int, max_attempts: int) -> dict[str, Any]:
    """The error a FAILED request keeps and its ``error`` frame carries (pure)."""
    if outcome.code == TIMEOUT:
        code = TIMEOUT
    elif outcome.code in PASS_THROUGH_CODES:
        code = outcome.code
    else:
        code = PROCESSING_FAILED
    details: dict[str, Any] = {"attempts": attempt, "max_attempts": max_attempts}
    if outcome.code and outcome.code != code:
        details["cause"] = outcome.code
    if outcome.details is not None and outcome.kind is Kind.REFUSED:
        details.update(outcome.details)  # our own facts (sizes, counts), not the handler's
    elif outcome.details is not None:
        details["handler_details"] = outcome.details
    return {"code": code, "message": outcome.message, "details": details, "retryable": False}


#: How far ``seq`` jumps when a request was recovered from a crashed processor.
SEQ_GAP_AFTER_RECOVERY = 1000


def start_seq(progress: dict[str, Any] | None, *, recoveries: int) -> int:
    """The ``seq`` an attempt numbers its progress frames after (pure).

    A retry or a hand-back saved the last ``seq`` it sent, so the next attempt just
    continues. A processor that crashed saved its progress at most once a second,
    so it may have sent frames past the saved ``seq``; after a recovery the numbers
    jump by :data:`SEQ_GAP_AFTER_RECOVERY` (far more frames than the rate limit lets
    through in a second) so a client never sees ``seq`` go backwards.
    """
    saved = int((progress or {}).get("seq", 0) or 0)
    return saved + (SEQ_GAP_AFTER_RECOVERY if recoveries else 0)


class Invoker:
    """Runs jobs (the dispatcher's ``run``): handler call, progress, the ending's writes and frames."""

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
        self.backoff = backoff or Backoff()
        self.handlers = handlers or HandlerClient(max_message_bytes=settings.grpc_max_message_bytes)

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
            await self._stopped(job, reporter=None)
            return
        if job.record.recoveries > self.settings.max_recoveries:
            await self._fail(job, _too_many_recoveries(job, limit=self.settings.max_recoveries))
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
            outcome = await self._invoke(job, spec, reporter)
        except asyncio.CancelledError:
            await reporter.close(flush=False)  # aborted: no writes, no frames
            raise
        metrics.PROCESSING_DURATION.labels(job.action).observe(loop.time() - started)
        if outcome.kind is Kind.STOPPED or job.stop_reason is StopReason.LOST:
            await self._stopped(job, reporter=reporter)
            return
        last = await reporter.close(flush=True)
        if outcome.kind is Kind.RESULT and outcome.size > self.settings.max_result_bytes:
            await self._fail(job, _too_large(outcome.size, limit=self.settings.max_result_bytes))
        elif outcome.kind is Kind.RESULT:
            await self._complete(job, outcome, last)  # done is done, even if a cancel came in meanwhile
        elif job.stop_reason is StopReason.CANCEL:
            await self._cancel(job)  # it failed while being cancelled: the client asked to stop anyway
        elif outcome.retryable and job.attempt < job.record.max_attempts:
            await self._retry(job, outcome, last)
        else:
            await self._fail(job, outcome)

    async def _persist(self, job: Job, progress: dict[str, Any]) -> None:
        try:
            job.record = await self.store.requests.save_progress(
                job.request_id, owner=self.worker_id, attempt=job.attempt, token=job.token, progress=progress
            )
        except TransitionRefused:
            job.request_stop(StopReason.LOST)

    async def _invoke(self, job: Job, spec: ActionSpec | None, reporter: ProgressReporter) -> Outcome:
        if spec is None or not spec.endpoint:
            return Outcome(
                kind=Kind.ERROR,
                code=SERVICE_UNAVAILABLE,
                message=f"No ready handler serves action {job.action!r}",
                retryable=True,
            )
        # The handler sees the id the client gave (the record's request_id is the table key).
        request = dataclasses.replace(
            Invocation.of(job.record, attempt=job.record.attempt), request_id=job.client_request_id
        )

        async def consume() -> Outcome:
            async for event in self.handlers.invoke(spec.endpoint, request, timeout=spec.timeout):
                if isinstance(event, Progress):
                    reporter.report(event.percentage, event.message, event.details)
                elif isinstance(event, Result):
                    return Outcome(kind=Kind.RESULT, result=event.data, size=event.size)
                else:
                    if job.stop_reason is not None and event.grpc_status == grpc.StatusCode.CANCELLED.name:
                        return Outcome(kind=Kind.STOPPED)
                    return outcome_from_failure(event)
            raise AssertionError("an invocation always ends with a result or a failure")  # pragma: no cover

        consumer = asyncio.create_task(consume(), name=f"invoke-{job.request_id}")
        stopper = asyncio.create_task(job.stopped.wait())
        try:
            await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not consumer.done():
                consumer.cancel()  # closes the invocation, which cancels the call
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
        if not consumer.done() or consumer.cancelled():
            return Outcome(kind=Kind.STOPPED)
        exc = consumer.exception()
        if exc is None:
            return consumer.result()
        log.error("handler call failed", exc_info=exc)
        return Outcome(kind=Kind.ERROR, code=INTERNAL_ERROR, message="Handler call failed", retryable=True)

    # ------------------------------------------------------------------ endings

    async def _publish_final(self, job: Job, message: CompleteMessage | ErrorMessage) -> None:
        await self.fanout.publish(job.record, message, final=True)

    def _outcome_metric(self, job: Job, outcome: str) -> None:
        metrics.REQUESTS.labels(job.action, outcome).inc()

    async def _end_claim(self, job: Job, write: Awaitable[Any], *, permanent: bool = False) -> bool:
        """Run the one conditional write that ends this attempt's claim; True if it won.

        The keeper stops renewing first, so no renew races the write. A refused write
        means another processor owns the request now (nothing may be sent); a temporary
        storage failure leaves the claim to expire and the sweeper to finish the job.
        ``permanent``: a :class:`StoreError` that is not retryable (the same write would
        fail the same way on every attempt) is raised to the caller instead.
        """
        self.keeper.remove(job)
        try:
            ended = await write
        except TransitionRefused:
            self._lost(job)
            return False
        except StoreError as exc:
            if permanent and not exc.retryable:
                raise
            self._store_trouble(job, exc)
            return False
        if isinstance(ended, RequestRecord):
            job.record = ended  # as written: the final frame's recipients follow its `subscribed`
        return True

    async def _complete(self, job: Job, outcome: Outcome, last: dict[str, Any] | None) -> None:
        try:
            won = await self._end_claim(
                job,
                self.store.requests.complete(
                    job.request_id,
                    owner=self.worker_id,
                    attempt=job.attempt,
                    token=job.token,
                    result=outcome.result,
                    progress=last,
                ),
                permanent=True,
            )
        except ItemTooLarge:
            # Under our own limit but not with the payload in one 400 KB item: the
            # same result would be refused on every attempt, so the request ends here.
            await self._fail(job, _too_large(outcome.size, limit=self.settings.max_result_bytes, item=True))
            return
        except StoreError as exc:
            # Refused for good (not throttling, not an outage): end it rather than re-run it.
            log.error("the result could not be stored", extra={"attempt": job.attempt, "error": str(exc)})
            await self._fail(
                job,
                Outcome(kind=Kind.REFUSED, code=INTERNAL_ERROR, message="The result could not be stored"),
            )
            return
        if not won:
            return
        self._outcome_metric(job, "completed")
        await self._publish_final(job, complete_message(job.client_request_id, outcome.result))

    async def _retry(self, job: Job, outcome: Outcome, last: dict[str, Any] | None) -> None:
        delay = self.backoff.delay(job.attempt)
        error = {"code": outcome.code, "message": outcome.message, "retryable": True, "attempt": job.attempt}
        if outcome.details is not None:
            error["details"] = outcome.details
        if not await self._end_claim(
            job,
            self.store.requests.retry(
                job.request_id,
                owner=self.worker_id,
                attempt=job.attempt,
                token=job.token,
                not_before=time.time() + delay,
                error=error,
                progress=last,
            ),
        ):
            return
        self._outcome_metric(job, "retried")
        log.info(
            "attempt failed; retrying",
            extra={"attempt": job.attempt, "code": outcome.code, "retry_in_seconds": round(delay, 3)},
        )

    async def _fail(self, job: Job, outcome: Outcome) -> None:
        error = final_error(outcome, attempt=job.attempt, max_attempts=job.record.max_attempts)
        if not await self._end_claim(
            job,
            self.store.requests.fail(
                job.request_id, owner=self.worker_id, attempt=job.attempt, token=job.token, error=error
            ),
        ):
            return
        self._outcome_metric(job, "timed_out" if error["code"] == TIMEOUT else "failed")
        await self._publish_final(
            job,
            error_message(
                error["code"],
                error["message"],
                request_id=job.client_request_id,
                details=error["details"],
                retryable=False,
            ),
        )

    async def _cancel(self, job: Job) -> None:
        if not await self._end_claim(
            job,
            self.store.requests.finish_cancel(
                job.request_id, owner=self.worker_id, attempt=job.attempt, token=job.token
            ),
        ):
            return
        self._outcome_metric(job, "cancelled")
        await self._publish_final(
            job,
            error_message(
                CANCELLED, "Request was cancelled", request_id=job.client_request_id, retryable=False
            ),
        )

    async def _stopped(self, job: Job, *, reporter: ProgressReporter | None) -> None:
        reason = job.stop_reason
        if reason is StopReason.LOST:
            if reporter:
                await reporter.close(flush=False)
            self._lost(job)
            return
        last = await reporter.close(flush=True) if reporter else None
        if reason is StopReason.CANCEL:
            await self._cancel(job)
            return
        await self.hand_back(job, progress=last)

    async def hand_back(self, job: Job, *, progress: dict[str, Any] | None = None) -> None:
        """Give a claimed request back (PENDING, same attempt) for another processor."""
        if not await self._end_claim(
            job,
            self.store.requests.release(
                job.request_id, owner=self.worker_id, attempt=job.attempt, token=job.token, progress=progress
            ),
        ):
            return
        self._outcome_metric(job, "released")

    def _lost(self, job: Job) -> None:
        self._outcome_metric(job, "lost")
        log.info("claim lost; another processor owns the request now", extra={"attempt": job.attempt})

    def _store_trouble(self, job: Job, exc: StoreError) -> None:
        # The claim will expire and the sweeper hands the request to a processor
        # again: the attempt is re-run rather than recorded wrongly.
        self._outcome_metric(job, "store_error")
        log.error("could not record the outcome", extra={"attempt": job.attempt, "error": str(exc)})


def _too_large(size: int, *, limit: int, item: bool = False) -> Outcome:
    """The ending of a result that cannot be stored (``RESULT_TOO_LARGE``, never retried)."""
    if item:
        message = f"The result ({size} bytes) does not fit the request's 400 KB DynamoDB item"
    else:
        message = f"The result ({size} bytes) is over the {limit}-byte limit"
    return Outcome(
        kind=Kind.REFUSED, code=RESULT_TOO_LARGE, message=message, details={"size": size, "limit": limit}
    )


def _too_many_recoveries(job: Job, *, limit: int) -> Outcome:
    """The ending of a request whose claims kept lapsing (its processors died or lost DynamoDB)."""
    return Outcome(
        kind=Kind.REFUSED,
        code=PROCESSING_FAILED,
        message=f"Gave up after the request was recovered {job.record.recoveries} times (limit {limit})",
        details={"recoveries": job.record.recoveries, "max_recoveries": limit},
    )
