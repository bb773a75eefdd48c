"""One attempt's handler call (services/processor/attempt.py), with a fake HandlerClient:
how the stream of events becomes one Outcome, and how a stop cancels the call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from services.processor.attempt import SEQ_GAP_AFTER_RECOVERY, HandlerCall, Kind, start_seq
from services.processor.jobs import Job, StopReason
from services.processor.progress import ProgressReporter
from streamer.handler_client import Failure, Progress, Result
from streamer.registry.static import StaticRegistry
from streamer.store.requests import RequestRecord


def test_start_seq_continues_and_jumps_after_a_recovery() -> None:
    assert start_seq(None, recoveries=0) == 0
    assert start_seq({"seq": 7}, recoveries=0) == 7
    assert start_seq({"seq": 7}, recoveries=1) == 7 + SEQ_GAP_AFTER_RECOVERY


class FakeHandlers:
    def __init__(self, events: list[Any], *, hang: bool = False, boom: bool = False) -> None:
        self.events = events
        self.hang = hang
        self.boom = boom
        self.cancelled = asyncio.Event()

    async def invoke(self, endpoint: str, request: Any, *, timeout: float) -> AsyncIterator[Any]:
        try:
            for event in self.events:
                yield event
            if self.boom:
                raise RuntimeError("broken stream")
            if self.hang:
                await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def setup() -> tuple[Job, Any, ProgressReporter, list[Any]]:
    registry = StaticRegistry(
        [
            {
                "kind": "StreamerHandler",
                "metadata": {"name": "h"},
                "spec": {"actions": [{"name": "work", "mode": "async"}]},
                "status": {"endpoint": "x:1"},
            }
        ]
    )
    record = RequestRecord.new(
        request_id="r1", action="work", user_id="u", tenant_id="t", connection_id="c", payload={}
    )
    frames: list[Any] = []

    async def publish(frame: Any) -> None:
        frames.append(frame)

    async def persist(progress: Any) -> None:
        return None

    reporter = ProgressReporter(
        request_id="r1", publish=publish, persist=persist, interval=60, start_seq=0, created_at=0.0
    )
    return Job(record, claimed_at=0.0), registry.lookup("work"), reporter, frames


async def test_progress_then_a_result() -> None:
    job, spec, reporter, frames = setup()
    handlers = FakeHandlers([Progress(percentage=50, message="half"), Result(data={"ok": 1}, size=8)])
    outcome = await HandlerCall(handlers).run(job, spec, reporter)  # type: ignore[arg-type]
    assert (outcome.kind, outcome.result, outcome.size) == (Kind.RESULT, {"ok": 1}, 8)
    await reporter.close(flush=True)
    assert [f["percentage"] for f in frames if f["type"] == "progress"] == [50]


async def test_a_failure_and_a_broken_stream() -> None:
    job, spec, reporter, _ = setup()
    failure = Failure(code="TIMEOUT", message="late", retryable=True)
    outcome = await HandlerCall(FakeHandlers([failure])).run(job, spec, reporter)  # type: ignore[arg-type]
    assert (outcome.kind, outcome.code, outcome.retryable) == (Kind.ERROR, "TIMEOUT", True)
    outcome = await HandlerCall(FakeHandlers([], boom=True)).run(job, spec, reporter)  # type: ignore[arg-type]
    assert (outcome.kind, outcome.code, outcome.retryable) == (Kind.ERROR, "INTERNAL_ERROR", True)


async def test_no_ready_handler_is_retryable_without_a_call() -> None:
    job, _, reporter, _ = setup()
    outcome = await HandlerCall(FakeHandlers([])).run(job, None, reporter)  # type: ignore[arg-type]
    assert (outcome.kind, outcome.code, outcome.retryable) == (Kind.ERROR, "SERVICE_UNAVAILABLE", True)


async def test_a_stop_cancels_the_call() -> None:
    job, spec, reporter, _ = setup()
    handlers = FakeHandlers([Progress(percentage=10, message="")], hang=True)
    running = asyncio.create_task(HandlerCall(handlers).run(job, spec, reporter))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    job.request_stop(StopReason.CANCEL)
    outcome = await asyncio.wait_for(running, 5)
    assert outcome.kind is Kind.STOPPED
    assert handlers.cancelled.is_set(), "the handler call was cancelled"
    await reporter.close(flush=False)
