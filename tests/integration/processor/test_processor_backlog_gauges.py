"""The processor's backlog gauges on a real processor, handler and DynamoDB Local.

A running request is in flight on the processor that claimed it; a request that waits
(scheduled later) is backlog with an age; both go back to 0 once they end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from processor_helpers import Env, wait_until

from services.processor.backlog import BACKLOG, IN_FLIGHT, OLDEST_PENDING
from streamer.store.requests import CANCELLED


def _value(metric: object, queue: str, handler: str) -> float | None:
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.labels == {"queue": queue, "handler": handler}:
                return float(sample.value)
    return None


async def test_in_flight_and_backlog_of_a_handler(env: Env) -> None:
    proc = await env.processor("w-backlog")
    queue = env.store.requests.table
    conn = await env.connection()
    running = await env.submit("p_slow", {"seconds": 30}, connection_id=conn)
    await asyncio.wait_for(env.calls.started[running.request_id].wait(), 10)
    waiting = dataclasses.replace(
        env.new_request("p_slow", connection_id=conn), not_before=time.time() + 3600
    )
    await env.store.requests.create(waiting)
    handler = running.handler
    assert handler

    async def measured() -> bool:
        await proc.backlog.measure_once()
        return (
            _value(IN_FLIGHT, queue, handler) == 1
            and _value(BACKLOG, queue, handler) == 1
            and (_value(OLDEST_PENDING, queue, handler) or 0) > 0
        )

    await wait_until(measured, what="1 in flight and 1 waiting")  # the status index lags a little

    for req in (running, waiting):
        await env.store.requests.cancel(req.request_id, tenant_id="t1")
        assert (await env.settled(req.request_id)).status == CANCELLED

    async def drained() -> bool:
        await proc.backlog.measure_once()
        return _value(IN_FLIGHT, queue, handler) == 0 and _value(BACKLOG, queue, handler) == 0

    await wait_until(drained, what="nothing in flight or waiting")


async def test_one_processor_of_a_queue_measures_its_backlog(env: Env) -> None:
    first = await env.processor("w-measure-a")
    second = await env.processor("w-measure-b")
    conn = await env.connection()
    later = time.time() + 3600
    waiting = dataclasses.replace(env.new_request("p_slow", connection_id=conn), not_before=later)
    await env.store.requests.create(waiting)

    def measurers() -> list[bool]:
        return [first._measures_backlog(), second._measures_backlog()]

    # Once both have read the stream's leases: the holder of the first one, and only it.
    await wait_until(lambda: measurers().count(True) == 1, timeout=30, what="exactly one measurer")
    leader, other = (first, second) if first._measures_backlog() else (second, first)
    assert other.coordinator.seen and await other.backlog.measure_once() == {}

    async def counted() -> bool:
        return (await leader.backlog.measure_once()).get(waiting.handler, (0, 0.0))[0] == 1

    await wait_until(counted, what="the leader counts the waiting request")
    await env.store.requests.cancel(waiting.request_id, tenant_id="t1")
