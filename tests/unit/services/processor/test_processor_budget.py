"""Bounded claims (ClaimBudget, the Claimer's gate, bounded renewals) and per-tenant fairness
in a lane (issue #18 item 5)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from services.processor.budget import ClaimBudget
from services.processor.claims import RENEW_CONCURRENCY, Candidate, Claimer, ClaimKeeper
from services.processor.dispatch import Dispatcher, Lane
from services.processor.jobs import Job, JobState
from streamer.registry.static import StaticRegistry
from streamer.store.keys import client_request_id
from streamer.store.requests import PROCESSING, RequestRecord


def record(
    rid: str, *, tenant: str = "t", action: str = "work", priority: int = 0, **kw: Any
) -> RequestRecord:
    base = RequestRecord.new(
        request_id=rid, action=action, user_id="u", tenant_id=tenant, connection_id="c", payload={}
    )
    return dataclasses.replace(base, priority=priority, **kw)


def job(rid: str, **kw: Any) -> Job:
    return Job(record(rid, **kw), claimed_at=0.0)


def lanes(limit: int) -> Any:
    return lambda action: (f"lane-{action}", limit)


# --- the budget --------------------------------------------------------------------------------


def test_a_lane_holds_at_most_its_factor_times_its_limit_and_a_tenant_half_of_that() -> None:
    budget = ClaimBudget(lane_of=lanes(2), max_claims=100, lane_factor=4)  # lane 8, tenant 4
    a = [budget.take("work", "A") for _ in range(6)]
    assert sum(s is not None for s in a) == 4, "one tenant takes at most half of the lane"
    b = [budget.take("work", "B") for _ in range(6)]
    assert sum(s is not None for s in b) == 4
    assert budget.take("work", "C") is None, "the lane is full"
    assert budget.take("other", "C") is not None, "another lane is not"
    slot = next(s for s in a if s is not None)
    slot.release()
    slot.release()  # once only
    assert budget.held == 8 and budget.lane_held("work") == 7
    assert budget.take("work", "C") is not None


def test_the_processor_total_bounds_every_lane() -> None:
    budget = ClaimBudget(lane_of=lanes(100), max_claims=3)
    slots = [budget.take(f"a{i}", "t") for i in range(5)]
    assert [s is not None for s in slots] == [True, True, True, False, False]
    assert budget.free == 0 and not budget.room("a9", "t")
    assert budget.take(None, None) is None


async def test_a_full_budget_claims_nothing_and_a_refused_claim_gives_its_slot_back() -> None:
    class Requests:
        def __init__(self) -> None:
            self.claims: list[str] = []

        async def claim(self, request_id: str, **_: Any) -> RequestRecord:
            self.claims.append(request_id)
            if request_id.startswith("taken"):
                from streamer.store.errors import TransitionRefused

                raise TransitionRefused(request_id, None)
            return record(request_id, status=PROCESSING)

    requests = Requests()
    budget = ClaimBudget(lane_of=lanes(1), max_claims=100, lane_factor=2)  # lane 2, tenant 1
    won: list[tuple[str, Any]] = []
    claimer = Claimer(
        requests=requests,  # type: ignore[arg-type]
        worker_id="w",
        claim_seconds=5,
        on_claimed=lambda r, s: won.append((r.client_request_id, s)),
        budget=budget,
    )

    def cand(rid: str, tenant: str) -> Candidate:
        return Candidate(request_id=rid, attempt=1, action="work", tenant=tenant)

    assert not await claimer.offer(cand("taken-1", "A"))
    assert budget.held == 0, "a refused claim gives its slot back"
    assert await claimer.offer(cand("a-1", "A"))
    assert not await claimer.offer(cand("a-2", "A")), "tenant A holds its share"
    assert requests.claims == ["taken-1", "a-1"], "no DynamoDB call without a slot"
    assert await claimer.offer(cand("b-1", "B"))
    assert not await claimer.offer(cand("c-1", "C")), "the lane is full"
    assert [rid for rid, _ in won] == ["a-1", "b-1"] and all(s.held for _, s in won)
    claimer.stop()


def test_the_keeper_gives_a_slot_back_when_it_stops_holding_the_claim() -> None:
    budget = ClaimBudget(lane_of=lanes(1), max_claims=10)
    keeper = ClaimKeeper(requests=None, worker_id="w", claim_seconds=3)  # type: ignore[arg-type]
    kept = Job(
        record("k", status=PROCESSING, claim_expires_at=time.time() + 3),
        claimed_at=0,
        slot=budget.take("work", "t"),
    )
    lapsing = Job(
        record("l", status=PROCESSING, claim_expires_at=time.time() - 1),
        claimed_at=0,
        slot=budget.take("work", "t"),
    )
    keeper.add(kept)
    keeper.add(lapsing)
    assert budget.held == 2
    assert keeper.lapse() == [lapsing] and budget.held == 1
    again = Job(
        record("k", status=PROCESSING, claim_expires_at=time.time() + 3),
        claimed_at=0,
        slot=budget.take("work", "t"),
    )
    keeper.add(again)  # our own lapsed claim won back: the old job's slot is free
    assert budget.held == 1
    keeper.remove(again)
    keeper.remove(again)
    assert budget.held == 0


# --- bounded renewals --------------------------------------------------------------------------


async def test_a_tick_starts_a_bounded_batch_of_renewals_nearest_deadline_first() -> None:
    started: list[str] = []
    gate = asyncio.Event()

    class Requests:
        async def renew(self, request_id: str, **_: Any) -> RequestRecord:
            started.append(request_id)
            await gate.wait()
            return record(request_id, status=PROCESSING, claim_expires_at=time.time() + 30)

    keeper = ClaimKeeper(requests=Requests(), worker_id="w", claim_seconds=30)  # type: ignore[arg-type]
    n = RENEW_CONCURRENCY * 3
    for i in range(n):
        j = Job(
            record(f"r{i}", status=PROCESSING, claim_expires_at=time.time() + 30 - i * 0.01), claimed_at=0
        )
        keeper.add(j)
        j.renew_at = 0.0  # all due
    assert keeper.renew_due() == RENEW_CONCURRENCY
    assert keeper.renew_due() == 0, "no more calls while the batch is in flight"
    await asyncio.sleep(0.05)
    # the claims closest to their deadline (the highest i) went first
    got = sorted(int(client_request_id(r)[1:]) for r in started)
    assert got == list(range(n - RENEW_CONCURRENCY, n))
    gate.set()
    await asyncio.sleep(0.05)
    assert keeper.renewing == 0
    assert keeper.renew_due() == RENEW_CONCURRENCY


async def test_a_stuck_renewal_gives_up_after_a_third_of_the_claim() -> None:
    class Requests:
        async def renew(self, request_id: str, **_: Any) -> RequestRecord:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    keeper = ClaimKeeper(requests=Requests(), worker_id="w", claim_seconds=0.3)  # type: ignore[arg-type]
    j = Job(record("s", status=PROCESSING, claim_expires_at=time.time() + 0.3), claimed_at=0)
    keeper.add(j)
    async with asyncio.timeout(5):
        await keeper.renew(j)
    assert j.renew_at <= time.monotonic() + keeper.interval


# --- fairness in a lane ------------------------------------------------------------------------


def test_a_lane_takes_tenants_in_turn() -> None:
    lane = Lane("h", 1)
    for i in range(50):
        lane.push(job(f"a{i}", tenant="A", created_at=float(i)))
    lane.push(job("b0", tenant="B", created_at=100.0))
    lane.push(job("b1", tenant="B", created_at=101.0, priority=5))
    lane.push(job("c0", tenant="C", created_at=200.0))
    order = []
    while (j := lane.pop()) is not None:
        j.state = JobState.RUNNING
        order.append(j.client_request_id)
    assert order[:7] == ["a0", "b1", "c0", "a1", "b0", "a2", "a3"], "round-robin; priority within a tenant"
    assert len(order) == 53 and lane.tenants == 0 and lane.load == 0


async def test_one_tenants_burst_does_not_starve_another_on_the_same_handler() -> None:
    registry = StaticRegistry(
        [
            {
                "kind": "StreamerHandler",
                "metadata": {"name": "h1"},
                "spec": {"actions": [{"name": "work", "mode": "async"}], "concurrency": 2},
                "status": {"endpoint": "x:1"},
            }
        ]
    )
    ran: list[str] = []
    release = asyncio.Event()

    async def run(j: Job) -> None:
        ran.append(j.client_request_id)
        await release.wait()

    dispatcher = Dispatcher(registry=registry, default_limit=8, run=run)
    for i in range(200):
        dispatcher.submit(job(f"a{i}", tenant="A", created_at=float(i)))
    dispatcher.submit(job("b0", tenant="B", created_at=1000.0))
    await asyncio.sleep(0)
    assert ran == ["a0", "a1"]
    release.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert ran.index("b0") <= 3, f"tenant B waited behind {ran.index('b0')} of A's requests"
    dispatcher.cancel_all()
    await dispatcher.tasks.wait()
