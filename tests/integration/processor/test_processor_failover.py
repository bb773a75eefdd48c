"""Several processors on one stream: exactly-once in effect, crash take-over, drain hand-back, sweeper."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from processor_helpers import Env, EnvFactory, wait_until

from services.processor.claims import candidate_from_request
from services.processor.stream.shards import LATEST
from streamer.store import COMPLETED, RequestRecord


async def lease_owners(env: Env) -> list[str | None]:
    return [lease.owner for lease in await env.store.leases.all()]


async def test_two_processors_share_the_stream_and_run_each_request_once(make_env: EnvFactory) -> None:
    # Background sweeps off: the test races the two processors' claim paths itself. Thirty
    # requests start at once in this one process: claims long enough that a busy event
    # loop does not let them lapse (a lapsed job is stopped, and no sweep would recover it).
    env = await make_env(sweep_interval_seconds=60.0, pending_grace_seconds=0.3, claim_seconds=6.0)
    conn = await env.connection()
    old = time.time() - 60

    async def backlog(n: int) -> list[RequestRecord]:
        records = [
            dataclasses.replace(env.new_request("p_fast", connection_id=conn), created_at=old, updated_at=old)
            for _ in range(n)
        ]
        await asyncio.gather(*(env.store.requests.create(record) for record in records))
        return records

    # Written before the processors start reading at LATEST: no stream path for these.
    duplicated = await backlog(10)
    swept = await backlog(10)
    a, b = await asyncio.gather(
        env.processor("w-a", initial_position=LATEST), env.processor("w-b", initial_position=LATEST)
    )

    # 1. The same record offered to both at once (what happens while a stolen lease's old
    #    owner has not yet noticed, or after a crash re-reads a batch): one claim wins.
    cands = [candidate_from_request(r, source="test") for r in duplicated]
    wins = await asyncio.gather(*(p.claimer.offer(c) for c in cands for p in (a, b)))
    assert [wins[i] + wins[i + 1] for i in range(0, len(wins), 2)] == [1] * len(duplicated)

    # 2. Both sweepers at once over the same backlog.
    results = await asyncio.gather(a.sweeper.sweep_once(), b.sweeper.sweep_once())
    assert sum(r.claimed for r in results) == len(swept)

    # 3. The live stream: one lease, one reader, the other processor idle.
    live = [await env.submit("p_fast", {"i": i}, connection_id=conn) for i in range(10)]

    ids = [record.request_id for record in duplicated + swept + live]

    async def all_done() -> bool:
        return all([await env.status(rid) == COMPLETED for rid in ids])

    await wait_until(all_done, timeout=20, what="every request completed")
    await wait_until(
        lambda: all(env.capture.endings(conn, rid) for rid in ids), timeout=10, what="every complete frame"
    )
    await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
    for rid in ids:
        assert env.calls.count[rid] == 1, rid
        assert len(env.capture.endings(conn, rid)) == 1, rid
    owners = await lease_owners(env)
    assert len(owners) == 1 and owners[0] in ("w-a", "w-b"), "one open shard, one lease, one reader"


async def test_processor_killed_mid_request_is_taken_over(env: Env) -> None:
    a = await env.processor("w-doomed")
    conn = await env.connection()
    await wait_until(lambda: bool(a.coordinator.readers), what="w-doomed reading the shard")
    b = await env.processor("w-survivor")
    req = await env.submit("p_slow", {"seconds": 0.6}, connection_id=conn)
    await asyncio.wait_for(env.calls.started[req.request_id].wait(), 10)
    claimed = await env.store.requests.get(req.request_id)
    assert claimed is not None and claimed.owner == "w-doomed"

    await a.abort()  # like SIGKILL: no lease release, no claim release, the handler call dropped

    done = await env.settled(req.request_id, timeout=20)
    assert done.status == COMPLETED
    assert done.owner == "w-survivor" and done.attempt == 1, "a crash does not use up an attempt"
    assert done.recoveries == 1
    assert env.calls.count[req.request_id] == 2, "run again after the crash (at-least-once execution)"
    assert [e["type"] for e in await env.endings(conn, req.request_id)] == ["complete"], "completed once"
    seqs = [f["seq"] for f in env.capture.of(conn, req.request_id) if f["type"] == "progress"]
    assert seqs == sorted(set(seqs)), "seq never goes backwards, even across the crash"
    assert b.sweeper.released_total >= 1
    # The survivor took the dead worker's shard lease over and reads new requests.
    await wait_until(lambda: bool(b.coordinator.readers), timeout=10, what="the lease taken over")
    assert await lease_owners(env) == ["w-survivor"]
    after = await env.submit("p_fast", connection_id=conn)
    assert (await env.settled(after.request_id)).owner == "w-survivor"


def _lease_changes(event: str) -> float:
    """streamer_processor_lease_changes_total (the StreamerLeaseChurn alert counts stolen and lost)."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("streamer_processor_lease_changes_total", {"event": event}) or 0.0


async def test_graceful_stop_hands_back_leases_and_running_requests(env: Env) -> None:
    taken, released = _lease_changes("taken"), _lease_changes("released")
    a = await env.processor("w-leaving")
    conn = await env.connection()
    await wait_until(lambda: bool(a.coordinator.readers), what="w-leaving reading the shard")
    b = await env.processor("w-staying")
    req = await env.submit("p_slow", {"seconds": 0.8}, connection_id=conn)
    await asyncio.wait_for(env.calls.started[req.request_id].wait(), 10)

    await a.stop(drain=0.1)  # shorter than the handler: the request is handed back

    handed_back = await env.store.requests.get(req.request_id)
    assert handed_back is not None and handed_back.owner != "w-leaving"
    assert await lease_owners(env) in ([None], ["w-staying"]), "the lease was released, not left to expire"
    assert _lease_changes("taken") >= taken + 1 and _lease_changes("released") >= released + 1
    done = await env.settled(req.request_id, timeout=10)
    assert done.status == COMPLETED and done.owner == "w-staying"
    assert done.attempt == 1 and done.recoveries == 0
    assert b.sweeper.released_total == 0, "handed back at once: nothing had to expire"
    assert [e["type"] for e in await env.endings(conn, req.request_id)] == ["complete"]
    progress = [f["seq"] for f in env.capture.of(conn, req.request_id) if f["type"] == "progress"]
    assert progress == sorted(set(progress)), "seq continues after the hand-back"


async def test_sweeper_recovers_a_request_whose_stream_record_was_never_read(env: Env) -> None:
    conn = await env.connection()
    old = time.time() - 60
    lost = dataclasses.replace(env.new_request("p_fast", connection_id=conn), created_at=old, updated_at=old)
    await env.store.requests.create(lost)
    # Reading starts at LATEST: the INSERT above is behind the reader and never seen.
    proc = await env.processor("w-sweeper", initial_position=LATEST)
    done = await env.settled(lost.request_id, timeout=10)
    assert done.status == COMPLETED
    assert proc.sweeper.claimed_total == 1
    assert env.calls.count[lost.request_id] == 1
    assert [e["type"] for e in await env.endings(conn, lost.request_id)] == ["complete"]
