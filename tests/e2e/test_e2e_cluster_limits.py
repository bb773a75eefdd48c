"""A handler's concurrency limit holds across three processors.

Three processor processes share one handler whose limit is 3 (``STREAMER_HANDLER_CONCURRENCY``:
the examples handler sets no ``spec.concurrency`` of its own). Fifteen slow ``echo_async``
requests arrive at once; the handler's own ``streamer_handler_in_flight`` gauge is sampled
the whole time. With the limit shared (the default scope, ``cluster``) it never exceeds 3;
with ``STREAMER_HANDLER_CONCURRENCY_SCOPE=processor`` — each processor its own bulkhead, as
before — the same load runs more at once, so the test can tell the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import pytest
from e2e_helpers import connect, running_stack
from metricslib import scrape

from streamer.local.stack import LocalStack

LIMIT = 3
REQUESTS = 15


async def _max_in_flight(stack: LocalStack, stop: asyncio.Event) -> int:
    port = stack.service("handler").http_port
    peak = 0
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            with contextlib.suppress(aiohttp.ClientError):
                in_flight = (await scrape(port, session=session)).value(
                    "streamer_handler_in_flight", action="echo_async"
                )
                if in_flight is not None:
                    peak = max(peak, int(in_flight))
            await asyncio.sleep(0.02)
    return peak


async def _peak_under_load(dynamodb: str, tmp_path: Any, scope: str) -> tuple[int, list[Any]]:
    env = {
        "STREAMER_HANDLER_CONCURRENCY": str(LIMIT),
        "STREAMER_HANDLER_CONCURRENCY_SCOPE": scope,
        "STREAMER_EXAMPLES_STEP_SECONDS": "0.3",  # each request runs ~1.2 s in the handler
    }
    async with running_stack(dynamodb, tmp_path, env=env, processors=3) as stack:
        # Every processor has seen the other two (one heartbeat round: lease_seconds / 3).
        await asyncio.sleep(2.0)
        stop = asyncio.Event()
        sampler = asyncio.create_task(_max_in_flight(stack, stop))
        async with connect(stack, reconnect_delay=0.1) as client:
            results = await asyncio.gather(
                *(client.request("echo_async", {"message": f"m{i}"}, timeout=120) for i in range(REQUESTS))
            )
        stop.set()
        return await sampler, results


async def test_the_limit_holds_across_three_processors(dynamodb: str, tmp_path: Any) -> None:
    peak, results = await _peak_under_load(dynamodb, tmp_path, "cluster")
    assert [r["message"] for r in results] == [f"m{i}" for i in range(REQUESTS)]
    print(f"\npeak in flight with the limit shared: {peak} (limit {LIMIT})")
    assert 1 <= peak <= LIMIT, f"{peak} ran at once; the handler's limit is {LIMIT}"


@pytest.mark.parametrize("scope", ["processor"])
async def test_per_processor_scope_lets_each_processor_run_the_whole_limit(
    dynamodb: str, tmp_path: Any, scope: str
) -> None:
    """The control: the same load with a bulkhead per processor goes over the limit."""
    peak, results = await _peak_under_load(dynamodb, tmp_path, scope)
    assert len(results) == REQUESTS
    print(f"\npeak in flight with a bulkhead per processor: {peak} (limit {LIMIT})")
    assert peak > LIMIT
