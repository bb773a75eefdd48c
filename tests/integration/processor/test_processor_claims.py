"""Regression tests of issue #18 (items 1-3): nothing run twice, nothing lost, every request ends.

Each test fails on the code before the fix:

- a result too large for the request item was re-run without end (the end write was
  refused, treated as temporary, the claim expired and the sweeper started it again);
- a processor that claimed its own lapsed request again left the old job running, and
  that job's final write passed the (owner, attempt) fence;
- a job whose claim could not be renewed kept running past the claim's expiry;
- a completion whose answer DynamoDB lost was taken for a lost claim: no ``complete``;
- recoveries of one request were not capped.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from processor_helpers import Env, EnvFactory, wait_until

from services.processor.claims import candidate_from_request
from streamer.config import load_settings
from streamer.local.faultproxy import Fault, FaultProxy
from streamer.store import COMPLETED, FAILED, PROCESSING, Store


@pytest.fixture
async def proxy(dynamodb: str) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(dynamodb, seed=18) as p:
        yield p


async def store_via(proxy: FaultProxy, env: Env) -> Store:
    """A store for the processor whose calls go through the fault proxy."""
    settings = load_settings(
        {}, dynamodb_endpoint=proxy.endpoint, table_prefix=env.settings.table_prefix, log_json=False
    )
    return await env.exits.enter_async_context(Store.open(settings=settings))


@pytest.mark.parametrize("limit", [256 * 1024, 4 * 1024 * 1024], ids=["over-the-limit", "over-the-item"])
async def test_a_500kb_result_ends_at_once_with_result_too_large(make_env: EnvFactory, limit: int) -> None:
    """The issue's case: ``max_attempts = 2`` and a 500 KB result. Over our limit, or under it
    but over DynamoDB's 400 KB item: either way FAILED ``RESULT_TOO_LARGE`` and one run."""
    env = await make_env(max_result_bytes=limit)
    await env.processor("w-big")
    conn = await env.connection()
    req = await env.submit("p_huge", {"kb": 500}, connection_id=conn)
    assert req.max_attempts == 2
    done = await env.settled(req.request_id, timeout=20)
    assert done.status == FAILED and done.error is not None
    assert done.error["code"] == "RESULT_TOO_LARGE", done.error
    assert done.error["details"]["size"] > 500 * 1024 and done.error["details"]["limit"] == limit
    assert done.recoveries == 0 and done.attempt == 1
    [ending] = await env.endings(conn, req.request_id)
    assert ending["type"] == "error" and ending["error"]["code"] == "RESULT_TOO_LARGE"
    assert ending["error"]["retryable"] is False
    await asyncio.sleep(env.settings.claim_seconds + 1)  # a claim period later: still one run
    assert env.calls.count[req.request_id] == 1


async def test_a_completion_whose_answer_was_lost_is_still_delivered(env: Env, proxy: FaultProxy) -> None:
    """The write landed, the answer was lost, the SDK's retry met ConditionalCheckFailed."""
    proc = await env.processor("w-amb", store=await store_via(proxy, env))
    conn = await env.connection()
    await wait_until(lambda: bool(proc.coordinator.readers), what="the shard read")
    # 2 s of work: the fault must be in place before the completion is written, even when a
    # loaded machine resumes this test late after the handler started (0.5 s was too short once).
    req = await env.submit("p_quiet", {"seconds": 2}, connection_id=conn)
    await asyncio.wait_for(env.calls.started[req.request_id].wait(), 10)
    proxy.set_faults([Fault(kind="ambiguous", ops=frozenset({"UpdateItem"}), tables=frozenset({"requests"}))])
    done = await env.settled(req.request_id)
    assert done.status == COMPLETED
    assert proxy.injected("ambiguous") >= 1
    assert [e["type"] for e in await env.endings(conn, req.request_id)] == ["complete"]
    assert env.calls.count[req.request_id] == 1


async def test_reclaiming_our_own_lapsed_claim_stops_the_old_job(env: Env) -> None:
    """The sweeper released our own expired claim and our claimer won it back (same owner,
    same attempt): the old job must stop and write nothing; the new one runs after it."""
    proc = await env.processor("w-self")
    conn = await env.connection()
    req = await env.submit("p_slow", {"seconds": 3}, connection_id=conn)
    await asyncio.wait_for(env.calls.started[req.request_id].wait(), 10)
    old = proc.keeper.jobs[req.request_id]
    # The claim runs out (as if renewals had failed) and is released, then won back by us.
    await proc.keeper.stop()  # no renewal may slip in between (the keeper runs again below)
    requests = env.store.requests
    await requests.renew(req.request_id, owner="w-self", attempt=1, token=old.token, claim_seconds=-5)
    released = await requests.release_expired(req.request_id, owner="w-self", attempt=1, token=old.token)
    assert await proc.claimer.offer(candidate_from_request(released, source="sweeper"))
    proc.keeper.start()
    new = proc.keeper.jobs[req.request_id]
    assert new is not old and new.token != old.token
    await asyncio.wait_for(env.calls.cancelled[req.request_id].wait(), 10)  # the old run was stopped
    done = await env.settled(req.request_id, timeout=20)
    assert done.status == COMPLETED and done.claim_token == new.token
    assert env.calls.count[req.request_id] == 2
    assert [e["type"] for e in await env.endings(conn, req.request_id)] == ["complete"]


async def test_a_job_whose_claim_cannot_be_renewed_stops_before_it_lapses(
    proxy: FaultProxy, make_env: EnvFactory
) -> None:
    """DynamoDB refuses every renewal: the job is stopped locally before its claim's deadline
    (nobody else may take the request over earlier), then recovered once DynamoDB is back."""
    env = await make_env(claim_seconds=2.0)
    proc = await env.processor("w-cut", store=await store_via(proxy, env))
    conn = await env.connection()
    await wait_until(lambda: bool(proc.coordinator.readers), what="the shard read")
    req = await env.submit("p_quiet", {"seconds": 6}, connection_id=conn)
    await asyncio.wait_for(env.calls.started[req.request_id].wait(), 10)
    proxy.set_faults([Fault(kind="error", ops=frozenset({"UpdateItem"}))])
    await asyncio.wait_for(env.calls.cancelled[req.request_id].wait(), 10)
    held = await env.store.requests.get(req.request_id)
    assert held is not None and held.status == PROCESSING  # stopped without a write
    assert req.request_id not in proc.keeper.jobs
    proxy.set_faults([])
    done = await env.settled(req.request_id, timeout=30)
    assert done.status == COMPLETED and done.recoveries == 1
    assert env.calls.count[req.request_id] == 2
    assert [e["type"] for e in await env.endings(conn, req.request_id)] == ["complete"]


async def test_recoveries_of_one_request_are_capped(make_env: EnvFactory) -> None:
    env = await make_env(max_recoveries=1)
    conn = await env.connection()
    record = env.new_request("p_fast", connection_id=conn)
    await env.store.requests.create(dataclasses.replace(record, recoveries=2))
    await env.processor("w-cap")
    done = await env.settled(record.request_id)
    assert done.status == FAILED and done.error is not None
    assert done.error["code"] == "PROCESSING_FAILED"
    assert done.error["details"]["recoveries"] == 2 and done.error["details"]["max_recoveries"] == 1
    assert env.calls.count[record.request_id] == 0
    [ending] = await env.endings(conn, record.request_id)
    assert ending["error"]["code"] == "PROCESSING_FAILED"


async def test_a_completion_that_landed_while_the_sdk_saw_only_failures_is_still_delivered(
    env: Env, proxy: FaultProxy
) -> None:
    """The complete write landed but its answer was lost, and the SDK's retries met errors
    until they ran out: the processor took it for a temporary failure and sent nothing. The
    request stayed COMPLETED in the table, no sweeper ever touches a finished request, and
    the client (its connection alive, so no ``$resume``) never heard — the chaos runs' one
    lost request of 1,000 (DynamoDB restarting, or throttling after a lost answer)."""
    proc = await env.processor("w-exhaust", store=await store_via(proxy, env))
    conn = await env.connection()
    await wait_until(lambda: bool(proc.coordinator.readers), what="the shard read")
    completes = 0
    update = frozenset({"UpdateItem"})

    def on_call(op: str, body: bytes) -> None:
        nonlocal completes
        if op != "UpdateItem" or b'"COMPLETED"' not in body:
            proxy.set_faults([])  # renewals and the rest go through
            return
        completes += 1
        if completes == 1:  # the first try lands; its answer is lost
            proxy.set_faults([Fault(kind="ambiguous", ops=update)])
        elif completes <= 6:  # every retry the SDK makes (3 tries per call) fails
            proxy.set_faults([Fault(kind="error", ops=update)])
        else:
            proxy.set_faults([])

    proxy.on_call = on_call
    req = await env.submit("p_quiet", {"seconds": 0.2}, connection_id=conn)
    done = await env.settled(req.request_id)
    assert done.status == COMPLETED
    endings = await env.endings(conn, req.request_id)
    proxy.on_call = None
    assert proxy.injected("ambiguous") == 1 and proxy.injected("error") >= 2
    assert [e["type"] for e in endings] == ["complete"]
    assert env.calls.count[req.request_id] == 1


async def test_a_final_frame_reaches_the_subscribers_though_their_first_read_fails(
    env: Env, proxy: FaultProxy
) -> None:
    """The final frame's read of the subscribers failed (the SDK's tries all met errors):
    the processor sent the ``complete`` to the owner's connection only. A subscriber — the
    client's new connection after a reconnect and ``$resume`` — never heard, and its socket
    being alive, it never asked again."""
    proc = await env.processor("w-subs", store=await store_via(proxy, env))
    await wait_until(lambda: bool(proc.coordinator.readers), what="the shard read")
    owner, watcher = await env.connection(), await env.connection()
    record = dataclasses.replace(
        env.new_request("p_quiet", {"seconds": 0.3}, connection_id=owner), subscribed=True
    )
    await env.store.subscriptions.subscribe(
        request_id=record.request_id, connection_id=watcher, user_id="u1", tenant_id="t1"
    )
    # Every read of the subscribers fails until more than one SDK call's tries have failed,
    # or the owner got its frame (sent once the subscribers' read gave up).
    proxy.set_faults([Fault(kind="error", ops=frozenset({"Query"}), tables=frozenset({"subscriptions"}))])
    await env.store.requests.create(record)
    await wait_until(
        lambda: proxy.injected("error") >= 6 or bool(env.capture.endings(owner, record.request_id)),
        timeout=60,
        what="the subscribers' read to fail",
    )
    proxy.set_faults([])
    assert [e["type"] for e in await env.endings(owner, record.request_id)] == ["complete"]
    assert [e["type"] for e in await env.endings(watcher, record.request_id)] == ["complete"]
