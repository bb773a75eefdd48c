"""Processes dying mid-request: the request still ends exactly once, with the right outcome.

One stack for the module; every test leaves its services running again, whatever happens.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from e2e_helpers import Recorder, connect, eventually, handler_invocations, running_stack

from streamer.client import StreamerError
from streamer.local.stack import LocalStack
from streamer.store import COMPLETED, FAILED, RequestRecord, Store, request_key

REPORT = {"start_date": "2026-01-01", "end_date": "2026-01-31", "format": "json", "report_type": "sales"}


@pytest.fixture(scope="module")
async def stack(dynamodb: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    # Slower example steps, so there is time to kill a process in the middle of a report;
    # more attempts for generate_report, so a restarting handler (a few seconds of Python
    # start-up on a busy machine) is back before they run out (backoff 1+2+4+8 s).
    env = {"STREAMER_EXAMPLES_STEP_SECONDS": "0.4"}
    overrides = {"generate_report": {"maxAttempts": 5}}
    async with running_stack(
        dynamodb, tmp_path_factory.mktemp("stack"), env=env, action_overrides=overrides
    ) as st:
        yield st


@pytest.fixture
async def healthy(stack: LocalStack) -> AsyncIterator[LocalStack]:
    """The stack, with every service brought back up after the test."""
    try:
        yield stack
    finally:
        for name, service in stack.services.items():
            if not service.running:
                await stack.restart(name, kill_first=False)


async def _finished(stack: LocalStack, request_id: str, tenant: str = "acme") -> RequestRecord | None:
    async with Store.open(settings=stack.settings) as store:
        record = await store.requests.get(request_key(tenant, request_id))
    return record if record is not None and record.terminal else None


async def test_processor_killed_mid_request_then_restarted_completes_exactly_once(
    healthy: LocalStack,
) -> None:
    stack = healthy
    request_id = f"pk-{uuid.uuid4().hex[:12]}"
    before = await handler_invocations(stack, "delay")
    recorder = Recorder()
    async with connect(stack, on_message=recorder) as client:
        started = asyncio.Event()
        handle = await client.start(
            "delay", {"seconds": 1.5, "steps": 3}, request_id=request_id, on_progress=lambda p: started.set()
        )
        await asyncio.wait_for(started.wait(), timeout=30)
        await stack.kill("processor")  # SIGKILL: no drain, no hand-back; the claim just expires
        await stack.restart("processor")
        result = await handle.result(timeout=90)
        await asyncio.sleep(1.0)  # a second complete would arrive about now
    assert result == {"seconds": 1.5, "steps": 3}
    assert len(recorder.of(request_id, "complete")) == 1
    assert not recorder.of(request_id, "error")
    record = await eventually(lambda: _finished(stack, request_id))
    assert record.status == COMPLETED and record.result == result
    after = await handler_invocations(stack, "delay")
    # The handler finished it once; the interrupted invocation ended without a result.
    assert after.get("ok", 0) - before.get("ok", 0) == 1


async def test_handler_killed_mid_request_is_retried(healthy: LocalStack) -> None:
    stack = healthy
    request_id = f"hk-{uuid.uuid4().hex[:12]}"
    recorder = Recorder()
    async with connect(stack, on_message=recorder) as client:
        started = asyncio.Event()
        handle = await client.start(
            "generate_report", REPORT, request_id=request_id, on_progress=lambda p: started.set()
        )
        await asyncio.wait_for(started.wait(), timeout=30)
        await stack.kill("handler")
        await stack.restart("handler")
        result = await handle.result(timeout=90)
        await asyncio.sleep(0.5)
    assert result["report_type"] == "sales"
    assert len(recorder.of(request_id, "complete")) == 1
    record = await eventually(lambda: _finished(stack, request_id))
    assert record.status == COMPLETED
    assert record.attempt >= 2  # the first attempt died with the handler


async def test_handler_that_stays_down_fails_the_request_after_its_attempts(healthy: LocalStack) -> None:
    stack = healthy
    request_id = f"hd-{uuid.uuid4().hex[:12]}"
    await stack.kill("handler")
    async with connect(stack) as client:
        handle = await client.start(
            "process_data", {"dataset_id": "ds-1", "operation": "analyze"}, request_id=request_id
        )
        try:
            await handle.result(timeout=90)
        except StreamerError as exc:
            error = exc
        else:
            raise AssertionError("a request for a dead handler completed")
    assert error.code in ("PROCESSING_FAILED", "SERVICE_UNAVAILABLE"), error
    record = await eventually(lambda: _finished(stack, request_id))
    assert record.status == FAILED
    assert record.attempt == record.max_attempts == 3
