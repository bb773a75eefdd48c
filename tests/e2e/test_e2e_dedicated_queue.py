"""A shared and a dedicated queue side by side on real processes (``streamer dev --dedicated``).

``echo_async`` stays on the shared requests table; ``delay`` moves to a dedicated
handler with its own table, stream and processor. Each request ends exactly once, in its
own table, run by its own processor; ``$status`` and ``$cancel`` find a request in
whichever table holds it; an id used on one queue is taken on the other too.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from e2e_helpers import connect, eventually, running_stack

from streamer.client import RequestCancelledError
from streamer.local.stack import LocalStack
from streamer.store import CANCELLED, COMPLETED, Store, request_key
from streamer.store.requests import RequestStore


@pytest.fixture
async def stack(dynamodb: str, tmp_path: object) -> AsyncIterator[LocalStack]:
    async with running_stack(dynamodb, tmp_path, dedicated=["delay"]) as running:
        yield running


def rid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_shared_and_dedicated_handlers_side_by_side(stack: LocalStack) -> None:
    assert stack.dedicated_table is not None
    assert "processor-dedicated" in stack.services
    shared_id, dedicated_id = rid("shared"), rid("dedicated")
    async with connect(stack) as client:
        shared = await client.start("echo_async", {"message": "hi"}, request_id=shared_id)
        dedicated = await client.start("delay", {"seconds": 0.2, "steps": 2}, request_id=dedicated_id)
        shared_result, dedicated_result = await asyncio.gather(
            shared.result(timeout=60), dedicated.result(timeout=60)
        )
        assert shared_result["message"] == "hi"
        assert dedicated_result is not None
        # $status finds the dedicated request through the router's lookup by id.
        status = await client.status(dedicated_id, timeout=30)
        assert status["status"] == COMPLETED
        # An id is unique across queues: the shared request's id sent to the dedicated
        # handler answers with that request, and nothing new is queued (and back again).
        again = await client.start("delay", {"seconds": 0.2, "steps": 2}, request_id=shared_id)
        assert (await again.result(timeout=60))["message"] == "hi"
        back = await client.start("echo_async", {"message": "other"}, request_id=dedicated_id)
        assert await back.result(timeout=60) == dedicated_result

    async with Store.open(settings=stack.settings) as store:
        own = RequestStore(store.client, stack.dedicated_table)
        in_shared = await store.requests.get(request_key("acme", shared_id))
        assert in_shared is not None and in_shared.status == COMPLETED
        assert (
            await store.requests.get(request_key("acme", dedicated_id)) is None
        )  # never in the shared table
        in_dedicated = await own.get(request_key("acme", dedicated_id))
        assert in_dedicated is not None and in_dedicated.status == COMPLETED
        assert await own.get(request_key("acme", shared_id)) is None
        # Only the dedicated processor reads that table (the router offers nothing for it).
        desc = (await store.client.describe_table(TableName=stack.dedicated_table))["Table"]
        assert desc["StreamSpecification"]["StreamEnabled"] is True


async def test_a_dedicated_request_can_be_cancelled(stack: LocalStack) -> None:
    request_id = rid("cancel")
    async with connect(stack) as client:
        first = asyncio.Event()
        handle = await client.start(
            "delay", {"seconds": 20, "steps": 40}, request_id=request_id, on_progress=lambda p: first.set()
        )
        await asyncio.wait_for(first.wait(), timeout=30)
        await client.cancel(request_id)  # the router finds it in the dedicated table
        try:
            await handle.result(timeout=30)
        except RequestCancelledError:
            pass
        else:
            raise AssertionError("the cancelled request completed")
    async with Store.open(settings=stack.settings) as store:
        own = RequestStore(store.client, str(stack.dedicated_table))

        async def cancelled() -> bool:
            record = await own.get(request_key("acme", request_id))
            return record is not None and record.status == CANCELLED

        await eventually(cancelled)
