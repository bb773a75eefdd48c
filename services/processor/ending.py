"""How an attempt ends: the decision (retry, fail, cancel, complete, hand back) and its writes.

:mod:`.attempt` turns the handler call into an :class:`~services.processor.attempt.Outcome`;
:func:`decide` says what that outcome means for the request (pure), and
:class:`EndingPolicy` makes the one conditional write that ends the claim and sends
the final frame. Every write is conditional on (PROCESSING, owner = us, attempt,
claim token), so only a live claim can write:

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
the ending write fails for a temporary      tried again for up to 60 s (it may have
reason (complete, fail, cancel)             landed: the store recognises this claim's
                                            own ending), then left to the sweepers
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
import dataclasses
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from services.processor import metrics
from services.processor.attempt import Kind, Outcome
from services.processor.claims import ClaimKeeper
from services.processor.fanout import Fanout
from services.processor.jobs import Job, StopReason
from services.processor.progress import ProgressReporter
from streamer.config import Settings
from streamer.protocol import (
    CANCELLED,
    INTERNAL_ERROR,
    PROCESSING_FAILED,
    RESULT_TOO_LARGE,
    TIMEOUT,
    VALIDATION_ERROR,
    CompleteMessage,
    ErrorMessage,
    complete_message,
    error_message,
)
from streamer.retry import Backoff
from streamer.store import Store
from streamer.store.errors import ItemTooLarge, StoreError, TransitionRefused
from streamer.store.requests import RequestRecord

log = logging.getLogger(__name__)

#: How long a terminal write that failed for a temporary reason is tried again (see
#: ``EndingPolicy._end_claim``), with this backoff between tries.
ENDING_RETRY_SECONDS = 60.0
ENDING_BACKOFF = Backoff(base=0.25, cap=5.0)
#: Handler error codes passed through to the client as they are when final.
PASS_THROUGH_CODES = frozenset({VALIDATION_ERROR, RESULT_TOO_LARGE})


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
    elif code == RESULT_TOO_LARGE and isinstance(outcome.details, dict) and "size" in outcome.details:
        # The handler SDK refused its own oversized answer: the same documented fields as ours.
        details.update({k: outcome.details[k] for k in ("size", "limit") if k in outcome.details})
    elif outcome.details is not None:
        details["handler_details"] = outcome.details
    return {"code": code, "message": outcome.message, "details": details, "retryable": False}


class Ending(enum.Enum):
    """What an attempt's outcome means for the request."""

    STOPPED = "stopped"  # the job was asked to stop (or lost its claim): see EndingPolicy.stopped
    COMPLETE = "complete"
    CANCEL = "cancel"
    RETRY = "retry"
    FAIL = "fail"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    ending: Ending
    #: The outcome to record (for FAIL, possibly the processor's own: a result too large).
    outcome: Outcome


def decide(
    outcome: Outcome, *, stop: StopReason | None, attempt: int, max_attempts: int, max_result_bytes: int
) -> Decision:
    """The ending of an attempt that came to ``outcome`` (pure).

    A stop or a lost claim wins; a result is kept even if a cancel came meanwhile
    (done is done) unless it is too large to store; a failure while being cancelled
    ends ``CANCELLED``; a retryable failure with attempts left is retried.
    """
    if outcome.kind is Kind.STOPPED or stop is StopReason.LOST:
        return Decision(ending=Ending.STOPPED, outcome=outcome)
    if outcome.kind is Kind.RESULT and outcome.size > max_result_bytes:
        return Decision(ending=Ending.FAIL, outcome=too_large(outcome.size, limit=max_result_bytes))
    if outcome.kind is Kind.RESULT:
        return Decision(ending=Ending.COMPLETE, outcome=outcome)
    if stop is StopReason.CANCEL:
        return Decision(ending=Ending.CANCEL, outcome=outcome)
    if outcome.retryable and attempt < max_attempts:
        return Decision(ending=Ending.RETRY, outcome=outcome)
    return Decision(ending=Ending.FAIL, outcome=outcome)


class EndingPolicy:
    """Ends a job's attempt as :func:`decide` says: one conditional write, then the final frame."""

    def __init__(
        self,
        *,
        store: Store,
        fanout: Fanout,
        keeper: ClaimKeeper,
        settings: Settings,
        worker_id: str,
        backoff: Backoff,
    ) -> None:
        self.store = store
        self.fanout = fanout
        self.keeper = keeper
        self.settings = settings
        self.worker_id = worker_id
        self.backoff = backoff

    async def settle(self, job: Job, outcome: Outcome, reporter: ProgressReporter) -> None:
        """End the attempt that came to ``outcome`` (its progress reporter still open)."""
        decision = decide(
            outcome,
            stop=job.stop_reason,
            attempt=job.attempt,
            max_attempts=job.record.max_attempts,
            max_result_bytes=self.settings.max_result_bytes,
        )
        if decision.ending is Ending.STOPPED:
            await self.stopped(job, reporter=reporter)
            return
        last = await reporter.close(flush=True)
        if decision.ending is Ending.COMPLETE:
            await self._complete(
                job, decision.outcome, last
            )  # done is done, even if a cancel came in meanwhile
        elif decision.ending is Ending.CANCEL:
            await self._cancel(job)  # it failed while being cancelled: the client asked to stop anyway
        elif decision.ending is Ending.RETRY:
            await self._retry(job, decision.outcome, last)
        else:
            await self.fail(job, decision.outcome)

    async def _publish_final(self, job: Job, message: CompleteMessage | ErrorMessage) -> None:
        await self.fanout.publish(job.record, message, final=True)

    def _outcome_metric(self, job: Job, outcome: str) -> None:
        metrics.REQUESTS.labels(job.action, outcome).inc()

    async def _end_claim(
        self,
        job: Job,
        write: Callable[[], Awaitable[Any]],
        *,
        permanent: bool = False,
        terminal: bool = False,
    ) -> bool:
        """Run the one conditional write that ends this attempt's claim; True if it won.

        The keeper stops renewing first, so no renew races the write. A refused write
        means another processor owns the request now (nothing may be sent).
        ``permanent``: a :class:`StoreError` that is not retryable (the same write would
        fail the same way on every attempt) is raised to the caller instead.

        A temporary storage failure of a ``terminal`` write (complete, fail, cancel) is
        tried again for up to :data:`ENDING_RETRY_SECONDS`: the failed call may have
        landed (DynamoDB applied it, then its answer was lost and the SDK's own retries
        ran out — a DynamoDB restart, throttling after a lost answer), and then the
        request is over in the table while its client hears nothing, for ever (the
        sweepers never touch a finished request). Trying again is safe: the write is
        fenced by this claim's token, and the store recognises the ending this claim
        already wrote. Any other write's failure leaves the claim to expire and a
        sweeper to hand the request on (the attempt is re-run rather than recorded wrongly).
        """
        self.keeper.remove(job)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + ENDING_RETRY_SECONDS
        failures = 0
        while True:
            try:
                ended = await write()
                break
            except TransitionRefused:
                self._lost(job)
                return False
            except StoreError as exc:
                if permanent and not exc.retryable:
                    raise
                failures += 1
                delay = ENDING_BACKOFF.delay(failures)
                if not terminal or not exc.retryable or loop.time() + delay > give_up:
                    self._store_trouble(job, exc)
                    return False
                log.warning(
                    "the ending write failed; trying again",
                    extra={"attempt": job.attempt, "error": str(exc), "retry_in_seconds": round(delay, 3)},
                )
                await asyncio.sleep(delay)
        if isinstance(ended, RequestRecord):
            job.record = ended  # as written: the final frame's recipients follow its `subscribed`
        return True

    async def _complete(self, job: Job, outcome: Outcome, last: dict[str, Any] | None) -> None:
        try:
            won = await self._end_claim(
                job,
                lambda: self.store.requests.complete(
                    job.request_id,
                    owner=self.worker_id,
                    attempt=job.attempt,
                    token=job.token,
                    result=outcome.result,
                    progress=last,
                ),
                permanent=True,
                terminal=True,
            )
        except ItemTooLarge:
            # Under our own limit but not with the payload in one 400 KB item: the
            # same result would be refused on every attempt, so the request ends here.
            await self.fail(job, too_large(outcome.size, limit=self.settings.max_result_bytes, item=True))
            return
        except StoreError as exc:
            # Refused for good (not throttling, not an outage): end it rather than re-run it.
            log.error("the result could not be stored", extra={"attempt": job.attempt, "error": str(exc)})
            await self.fail(
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
            lambda: self.store.requests.retry(
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

    async def fail(self, job: Job, outcome: Outcome) -> None:
        """End the request FAILED with ``outcome``'s error, then send the ``error`` frame."""
        error = final_error(outcome, attempt=job.attempt, max_attempts=job.record.max_attempts)
        if not await self._end_claim(
            job,
            lambda: self.store.requests.fail(
                job.request_id, owner=self.worker_id, attempt=job.attempt, token=job.token, error=error
            ),
            terminal=True,
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
            lambda: self.store.requests.finish_cancel(
                job.request_id, owner=self.worker_id, attempt=job.attempt, token=job.token
            ),
            terminal=True,
        ):
            return
        self._outcome_metric(job, "cancelled")
        await self._publish_final(
            job,
            error_message(
                CANCELLED, "Request was cancelled", request_id=job.client_request_id, retryable=False
            ),
        )

    async def stopped(self, job: Job, *, reporter: ProgressReporter | None) -> None:
        """The job was asked to stop: nothing (claim lost), ``CANCELLED``, or handed back."""
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
            lambda: self.store.requests.release(
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


def too_large(size: int, *, limit: int, item: bool = False) -> Outcome:
    """The ending of a result that cannot be stored (``RESULT_TOO_LARGE``, never retried)."""
    if item:
        message = f"The result ({size} bytes) does not fit the request's 400 KB DynamoDB item"
    else:
        message = f"The result ({size} bytes) is over the {limit}-byte limit"
    return Outcome(
        kind=Kind.REFUSED, code=RESULT_TOO_LARGE, message=message, details={"size": size, "limit": limit}
    )


def too_many_recoveries(job: Job, *, limit: int) -> Outcome:
    """The ending of a request whose claims kept lapsing (its processors died or lost DynamoDB)."""
    return Outcome(
        kind=Kind.REFUSED,
        code=PROCESSING_FAILED,
        message=f"Gave up after the request was recovered {job.record.recoveries} times (limit {limit})",
        details={"recoveries": job.record.recoveries, "max_recoveries": limit},
    )
