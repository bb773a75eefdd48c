"""One attempt of a claimed request: the handler call, streaming its events.

The handler's ``Invoke`` is a server stream: progress events, then exactly one
``result`` or ``error``. The call's deadline is the action's ``timeout``
(``ActionSpec.timeout``: what the handler declared, and what its SDK enforces on
its side too). :class:`HandlerCall` turns the stream into one :class:`Outcome` —
what the attempt came to, before anything is written — while progress goes to the
attempt's :class:`~services.processor.progress.ProgressReporter`. A job asked to stop
(cancel, lost claim, shutdown) cancels the call, which cancels the handler's work.

What is then written and sent is :mod:`.ending`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from typing import Any

import grpc

from services.processor.jobs import Job
from services.processor.progress import ProgressReporter
from streamer.handler_client import Failure, HandlerClient, Invocation, Progress, Result
from streamer.protocol import INTERNAL_ERROR, SERVICE_UNAVAILABLE, TIMEOUT
from streamer.registry import ActionSpec

log = logging.getLogger(__name__)


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


class HandlerCall:
    """Calls a job's handler and streams its events into one :class:`Outcome`."""

    def __init__(self, handlers: HandlerClient) -> None:
        self.handlers = handlers

    async def run(self, job: Job, spec: ActionSpec | None, reporter: ProgressReporter) -> Outcome:
        """The attempt's outcome; ``STOPPED`` when the job was asked to stop first."""
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
