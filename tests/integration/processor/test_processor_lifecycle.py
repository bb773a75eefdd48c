"""One processor, real stream, real handlers: lifecycle, progress, retries, timeouts, cancels, priority."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import itertools

from processor_helpers import Env, EnvFactory, wait_until

from services.processor import metrics
from streamer.store import CANCELLED, COMPLETED, FAILED


def ms(ts: str) -> float:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def sample(counter: object, *labels: str) -> float:
    return float(counter.labels(*labels)._value.get())  # type: ignore[attr-defined]


async def test_whole_lifecycle_with_progress_order_and_rate_limit(env: Env) -> None:
    await env.processor("w-life")
    conn = await env.connection()
    before = sample(metrics.REQUESTS, "p_chatty", "completed")
    coalesced_before = sample(metrics.PROGRESS_UPDATES, "coalesced")
    steps = 60
    req = await env.submit("p_chatty", {"steps": steps, "pause": 0.03, "burst": 10}, connection_id=conn)

    done = await env.settled(req.request_id)
    assert done.status == COMPLETED
    assert done.result == {"steps": steps}
    assert done.attempt == 1 and done.owner == "w-life"
    assert len(await env.endings(conn, req.request_id)) == 1

    frames = env.capture.of(conn, req.request_id)
    progress = [f for f in frames if f["type"] == "progress"]
    assert frames[-1]["type"] == "complete", "complete comes after every progress frame"
    assert frames[-1]["result"] == {"steps": steps}
    assert len([f for f in frames if f["type"] == "complete"]) == 1
    # Order: seq strictly increasing from 1, no gaps; first and final reports present.
    assert [f["seq"] for f in progress] == list(range(1, len(progress) + 1))
    assert progress[0]["percentage"] == 0 and progress[0]["metadata"] == {"step": 0}
    assert progress[-1]["percentage"] == 100 and progress[-1]["metadata"] == {"step": steps}
    # Rate limit: far fewer frames than reports, and frames at least an interval apart
    # (except the final 100 %, which is never held back).
    assert len(progress) < steps / 2
    interval = env.settings.progress_interval_seconds
    stamps = [ms(f["timestamp"]) for f in progress[:-1]]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= interval - 0.002 for gap in gaps), gaps
    assert sample(metrics.PROGRESS_UPDATES, "coalesced") > coalesced_before
    # Persisted: the final progress with the request.
    assert done.progress is not None and done.progress["seq"] == progress[-1]["seq"]
    assert done.progress["percentage"] == 100
    assert env.calls.count[req.request_id] == 1
    assert sample(metrics.REQUESTS, "p_chatty", "completed") == before + 1


async def test_subscriber_receives_the_same_updates(env: Env) -> None:
    await env.processor("w-sub")
    owner = await env.connection()
    watcher = await env.connection()
    # As $subscribe leaves it: the subscription, and the request marked `subscribed`.
    record = dataclasses.replace(env.new_request("p_fast", {"n": 1}, connection_id=owner), subscribed=True)
    await env.store.subscriptions.subscribe(
        request_id=record.request_id, connection_id=watcher, user_id="u2", tenant_id="t1"
    )
    await env.store.requests.create(record)
    done = await env.settled(record.request_id)
    assert done.status == COMPLETED
    await env.endings(watcher, record.request_id)
    await env.endings(owner, record.request_id)
    mine = env.capture.of(owner, record.request_id)
    theirs = env.capture.of(watcher, record.request_id)
    assert theirs == mine
    assert [f["type"] for f in theirs][-1] == "complete"
    assert any(f["type"] == "progress" for f in theirs)


async def test_retry_then_success_continues_seq_and_is_scheduled_not_dropped(make_env: EnvFactory) -> None:
    # A long pending grace: only the not_before timer can pick the retry up, not the sweeper.
    env = await make_env(pending_grace_seconds=60.0)
    await env.processor("w-retry")
    conn = await env.connection()
    retried = sample(metrics.REQUESTS, "p_flaky", "retried")
    req = await env.submit("p_flaky", {"failures": 2}, connection_id=conn)
    done = await env.settled(req.request_id)
    assert done.status == COMPLETED
    assert done.attempt == 3 and done.result == {"succeeded_on": 3}
    assert env.calls.count[req.request_id] == 3
    assert sample(metrics.REQUESTS, "p_flaky", "retried") == retried + 2
    await env.endings(conn, req.request_id)
    frames = env.capture.of(conn, req.request_id)
    assert [f["type"] for f in frames if f["type"] != "progress"] == ["complete"], (
        "no error frame for retries"
    )
    seqs = [f["seq"] for f in frames if f["type"] == "progress"]
    assert seqs == sorted(set(seqs)) and len(seqs) == 3, "seq keeps increasing across attempts"


async def test_retry_then_failed(env: Env) -> None:
    await env.processor("w-fail")
    conn = await env.connection()
    req = await env.submit("p_broken", connection_id=conn)
    done = await env.settled(req.request_id)
    assert done.status == FAILED
    assert done.attempt == 2
    assert env.calls.count[req.request_id] == 2, "maxAttempts = 2"
    assert done.error is not None and done.error["code"] == "PROCESSING_FAILED"
    endings = await env.endings(conn, req.request_id)
    assert len(endings) == 1
    error = endings[0]
    assert error["type"] == "error" and error["request_id"] == req.client_request_id
    assert error["error"]["code"] == "PROCESSING_FAILED"
    assert error["error"]["retryable"] is False
    assert error["error"]["message"] == "the database is down"
    assert error["error"]["details"]["attempts"] == 2


async def test_timeout_follows_max_attempts_and_ends_with_timeout(env: Env) -> None:
    await env.processor("w-timeout")
    conn = await env.connection()
    req = await env.submit("p_never", connection_id=conn)
    done = await env.settled(req.request_id)
    assert done.status == FAILED
    assert done.error is not None and done.error["code"] == "TIMEOUT"
    assert env.calls.count[req.request_id] == 2
    await wait_until(
        lambda: env.calls.cancelled[req.request_id].is_set(), what="the handler's work cancelled"
    )
    endings = await env.endings(conn, req.request_id)
    assert [e["error"]["code"] for e in endings] == ["TIMEOUT"]


async def test_cancel_while_pending_never_runs_the_handler(env: Env) -> None:
    conn = await env.connection()
    req = await env.submit("p_fast", connection_id=conn)
    cancelled = await env.store.requests.cancel(req.request_id, tenant_id="t1")
    assert cancelled.status == CANCELLED
    await env.processor("w-cancel-pending")
    marker = await env.submit("p_fast", connection_id=conn)
    assert (await env.settled(marker.request_id)).status == COMPLETED  # the stream was read past it
    assert env.calls.count[req.request_id] == 0
    assert await env.status(req.request_id) == CANCELLED


async def test_cancel_while_running_ends_the_handler_call(env: Env) -> None:
    await env.processor("w-cancel-run")
    conn = await env.connection()
    req = await env.submit("p_slow", {"seconds": 30}, connection_id=conn)
    await asyncio.wait_for(env.calls.started[req.request_id].wait(), 10)
    await env.store.requests.cancel(req.request_id, tenant_id="t1")
    done = await env.settled(req.request_id)
    assert done.status == CANCELLED
    await asyncio.wait_for(env.calls.cancelled[req.request_id].wait(), 5)
    endings = await env.endings(conn, req.request_id)
    assert endings == [
        {
            "type": "error",
            "request_id": req.client_request_id,
            "error": {"code": "CANCELLED", "message": "Request was cancelled", "retryable": False},
        }
    ]
    assert env.calls.count[req.request_id] == 1


async def test_bulkhead_priority_and_cancel_while_queued(env: Env) -> None:
    await env.processor("w-bulkhead")
    conn = await env.connection()
    # proc-single has concurrency 1: the first request holds the slot while the others queue.
    blocker = await env.submit("p_ordered", {"seconds": 1.0}, connection_id=conn)
    await asyncio.wait_for(env.calls.started[blocker.request_id].wait(), 10)
    low = await env.submit("p_ordered", connection_id=conn, priority=0)
    doomed = await env.submit("p_ordered", connection_id=conn, priority=0)
    high = await env.submit("p_ordered", connection_id=conn, priority=10)

    async def all_claimed() -> bool:
        statuses = [await env.status(r.request_id) for r in (low, doomed, high)]
        return statuses == ["PROCESSING"] * 3

    await wait_until(all_claimed, what="the backlog claimed")
    await env.store.requests.cancel(doomed.request_id, tenant_id="t1")
    cancelled = await env.settled(doomed.request_id, timeout=5)
    assert cancelled.status == CANCELLED
    assert env.calls.count[blocker.request_id] == 1
    assert await env.status(blocker.request_id) == "PROCESSING", (
        "cancelled while queued, before the slot freed"
    )
    for r in (blocker, low, high):
        assert (await env.settled(r.request_id)).status == COMPLETED
    ran = [rid for rid in env.calls.order if rid in {blocker.request_id, low.request_id, high.request_id}]
    assert ran == [blocker.request_id, high.request_id, low.request_id]
    assert env.calls.count[doomed.request_id] == 0
    assert [e["error"]["code"] for e in await env.endings(conn, doomed.request_id)] == ["CANCELLED"]
