"""A processor holds a bounded number of claims and takes tenants in turn (issue #18 item 5).

Before: a processor claimed every PENDING request its shard's stream showed (and every
one its sweeper found), held them all and renewed them all; one tenant's burst of
requests to a handler ran to the end before another tenant's request that came a
moment later. A real processor against DynamoDB Local's stream and a real handler.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal

import yaml
from metricslib import scrape
from processor_helpers import Env, processor_process, uid, wait_until

from services.processor.budget import LANE_CLAIM_FACTOR
from streamer.store import COMPLETED, PROCESSING, RequestRecord


async def test_a_burst_is_claimed_a_lane_share_at_a_time_and_another_tenant_is_not_starved(env: Env) -> None:
    proc = await env.processor("w-budget")
    conn = await env.connection()
    spec = env.registry.lookup("p_ordered")
    assert spec is not None and spec.concurrency == 1  # proc-single: one at a time
    lane_cap = LANE_CLAIM_FACTOR * spec.concurrency
    tenant_cap = lane_cap // 2

    def new(tenant: str, i: int) -> RequestRecord:
        return RequestRecord.new(
            request_id=uid(f"{tenant}-{i}"),
            action="p_ordered",
            user_id="u1",
            tenant_id=tenant,
            connection_id=conn,
            payload={"seconds": 0.2},
            handler=spec.handler,
            max_attempts=spec.max_attempts,
            timeout=spec.timeout,
        )

    burst = [new("ta", i) for i in range(tenant_cap * 3)]
    for r in burst:
        await env.store.requests.create(r)
    late = [new("tb", i) for i in range(2)]
    for r in late:
        await env.store.requests.create(r)
    everything = [*burst, *late]

    # What the processor holds, sampled from its claim keeper (every claim it renews).
    most_held = 0
    most_held_by_burst = 0

    async def sample() -> None:
        nonlocal most_held, most_held_by_burst
        assert proc.path is not None
        while True:
            jobs = list(proc.path.keeper.jobs.values())
            most_held = max(most_held, len(jobs))
            most_held_by_burst = max(most_held_by_burst, sum(j.record.tenant_id == "ta" for j in jobs))
            await asyncio.sleep(0.005)

    async def all_done() -> bool:
        records = [await env.store.requests.get(r.request_id) for r in everything]
        return all(r is not None and r.status == COMPLETED for r in records)

    sampler = asyncio.create_task(sample())
    try:
        await wait_until(all_done, timeout=90, what="every request to complete")
    finally:
        sampler.cancel()
    assert most_held_by_burst <= tenant_cap, (
        f"tenant ta held {most_held_by_burst} claims ({tenant_cap} at most)"
    )
    assert most_held <= lane_cap, f"the lane held {most_held} claims (cap {lane_cap})"
    assert proc.path is not None
    assert proc.path.budget.held == 0, "every slot was given back"
    order = [rid for rid in env.calls.order if rid in {r.request_id for r in everything}]
    assert len(order) == len(everything), "each request ran once"
    late_at = max(order.index(r.request_id) for r in late)
    assert late_at < tenant_cap + len(late) + 1, (
        f"tenant tb's requests ran as number {late_at + 1} of {len(order)}: behind tenant ta's burst"
    )


async def test_a_processor_process_leaves_what_it_may_not_claim_and_takes_tenants_in_turn(
    env: Env, tmp_path: pathlib.Path
) -> None:
    """The same as a process of its own (``python -m services.processor``, file registry):
    it never holds more than a tenant's share of a lane, says so on ``/metrics``
    (``claims_total{result="full"}``), and runs the late tenant's requests early."""
    spec = env.registry.lookup("p_ordered")
    assert spec is not None and spec.concurrency == 1
    tenant_cap = LANE_CLAIM_FACTOR * spec.concurrency // 2
    registry_file = tmp_path / "registry.yaml"
    doc = {
        "apiVersion": "streamer.dev/v1alpha1",
        "kind": "StreamerHandler",
        "metadata": {"name": "proc-single"},
        "spec": {"actions": [{"name": "p_ordered", "mode": "async", "timeout": "10s"}], "concurrency": 1},
        "status": {"endpoint": spec.endpoint},
    }
    registry_file.write_text(yaml.safe_dump(doc))
    async with processor_process(
        env.settings,
        registry_file,
        worker_id="w-budget-process",
        env={"STREAMER_CLAIM_SECONDS": "4", "STREAMER_PENDING_GRACE_SECONDS": "1"},
    ) as child:
        port, proc = child.http_port, child.proc
        conn = await env.connection()

        def new(tenant: str, i: int) -> RequestRecord:
            return RequestRecord.new(
                request_id=uid(f"{tenant}-{i}"),
                action="p_ordered",
                user_id="u1",
                tenant_id=tenant,
                connection_id=conn,
                payload={"seconds": 0.2},
                handler=spec.handler,
                max_attempts=spec.max_attempts,
                timeout=spec.timeout,
            )

        burst = [new("pa", i) for i in range(tenant_cap * 3)]
        late = [new("pb", i) for i in range(2)]
        for r in [*burst, *late]:
            await env.store.requests.create(r)
        everything = {r.request_id for r in [*burst, *late]}
        most_held_by_burst = 0

        async def all_done() -> bool:
            nonlocal most_held_by_burst
            # One query: the claims held at one moment (as good as DynamoDB Local's index).
            held = [r for r in await env.store.requests.by_status(PROCESSING) if r.request_id in everything]
            most_held_by_burst = max(most_held_by_burst, sum(r.tenant_id == "pa" for r in held))
            records = [await env.store.requests.get(rid) for rid in everything]
            return all(r is not None and r.status == COMPLETED for r in records)

        await wait_until(all_done, timeout=120, what="every request to complete")
        assert most_held_by_burst <= tenant_cap, f"tenant pa held {most_held_by_burst} claims"
        metrics = await scrape(port)
        assert metrics.total("streamer_processor_claims_total", result="full") > 0
        order = [rid for rid in env.calls.order if rid in everything]
        assert len(order) == len(everything), "each request ran once"
        late_at = max(order.index(r.request_id) for r in late)
        assert late_at < tenant_cap + len(late) + 1, f"tenant pb's requests ran as number {late_at + 1}"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
