"""Bulkheads and priority order (Dispatcher, Lane), record parsing, fan-out."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from services.processor.claims import (
    Candidate,
    Claimer,
    cancel_from_record,
    candidate_from_record,
    settled_from_record,
)
from services.processor.dispatch import Dispatcher, Lane
from services.processor.fanout import Fanout
from services.processor.jobs import Job, JobState, StopReason
from streamer.registry.static import StaticRegistry
from streamer.store.dynamo import serialize_item
from streamer.store.keys import request_key
from streamer.store.requests import RequestRecord
from streamer.store.subscriptions import Subscription


def record(
    rid: str, *, action: str = "work", priority: int = 0, created_at: float = 0.0, **kw: Any
) -> RequestRecord:
    base = RequestRecord.new(
        request_id=rid,
        action=action,
        user_id="u",
        tenant_id="t",
        connection_id="c",
        payload={},
        priority=priority,
    )
    return dataclasses.replace(base, created_at=created_at or base.created_at, **kw)


def job(rid: str, **kw: Any) -> Job:
    return Job(record(rid, **kw), claimed_at=0.0)


def registry(*, concurrency: int | None = None) -> StaticRegistry:
    spec: dict[str, Any] = {
        "actions": [{"name": "work", "mode": "async"}, {"name": "other", "mode": "async"}]
    }
    if concurrency:
        spec["concurrency"] = concurrency
    docs = [
        {"kind": "StreamerHandler", "metadata": {"name": "h1"}, "spec": spec, "status": {"endpoint": "x:1"}},
        {
            "kind": "StreamerHandler",
            "metadata": {"name": "h2"},
            "spec": {"actions": [{"name": "fast", "mode": "async"}]},
            "status": {"endpoint": "x:2"},
        },
    ]
    return StaticRegistry(docs)


# --- priority heap -------------------------------------------------------------------------------


def test_lane_pops_higher_priority_first_then_oldest_then_arrival() -> None:
    lane = Lane("h", 1)
    jobs = [
        job("low", priority=0, created_at=1.0),
        job("high-late", priority=5, created_at=3.0),
        job("mid", priority=1, created_at=0.5),
        job("high-early", priority=5, created_at=2.0),
        job("low-same-time-b", priority=0, created_at=1.0),
    ]
    for queued in jobs:
        lane.push(queued)
    order = []
    while (popped := lane.pop()) is not None:
        order.append(popped.client_request_id)
    assert order == ["high-early", "high-late", "mid", "low", "low-same-time-b"]


def test_lane_skips_jobs_removed_while_queued() -> None:
    lane = Lane("h", 1)
    a, b = job("a"), job("b")
    lane.push(a)
    lane.push(b)
    a.state = JobState.DONE
    assert len(lane) == 1
    assert lane.pop() is b
    assert lane.pop() is None


# --- bulkheads -----------------------------------------------------------------------------------


class Runner:
    """A ``run`` whose jobs block until released, recording start order."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def __call__(self, j: Job) -> None:
        self.started.append(j.client_request_id)
        gate = self.gates.setdefault(j.client_request_id, asyncio.Event())
        await gate.wait()

    def release(self, rid: str) -> None:
        self.gates.setdefault(rid, asyncio.Event()).set()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_bulkhead_limits_concurrency_and_backlog_runs_by_priority() -> None:
    run = Runner()
    d = Dispatcher(registry=registry(concurrency=2), default_limit=64, run=run)
    d.submit(job("a", created_at=1))
    d.submit(job("b", created_at=2))
    d.submit(job("c", created_at=3))
    d.submit(job("urgent", priority=9, created_at=4))
    d.submit(job("d", created_at=5))
    await settle()
    assert run.started == ["a", "b"], "spec.concurrency = 2"
    assert d.running == 2 and d.queued == 3
    run.release("a")
    await settle()
    assert run.started[-1] == "urgent", "the higher priority jumps the backlog"
    for rid in ["b", "urgent", "c", "d"]:
        run.release(rid)
        await settle()
    assert run.started == ["a", "b", "urgent", "c", "d"]
    assert await d.wait_idle(1.0)


async def test_default_limit_applies_when_the_handler_declares_none() -> None:
    run = Runner()
    d = Dispatcher(registry=registry(), default_limit=1, run=run)
    d.submit(job("a"))
    d.submit(job("b"))
    await settle()
    assert run.started == ["a"]
    run.release("a")
    run.release("b")
    await settle()
    assert run.started == ["a", "b"]


async def test_one_full_handler_does_not_block_another() -> None:
    run = Runner()
    d = Dispatcher(registry=registry(concurrency=1), default_limit=1, run=run)
    d.submit(job("slow-1"))
    d.submit(job("slow-2"))
    d.submit(job("fast-1", action="fast"))
    await settle()
    assert run.started == ["slow-1", "fast-1"]
    for rid in ["slow-1", "slow-2", "fast-1"]:
        run.release(rid)
    await settle()


async def test_actions_of_one_handler_share_its_bulkhead() -> None:
    run = Runner()
    d = Dispatcher(registry=registry(concurrency=1), default_limit=10, run=run)
    d.submit(job("w", action="work"))
    d.submit(job("o", action="other"))
    await settle()
    assert run.started == ["w"]
    run.release("w")
    run.release("o")
    await settle()
    assert run.started == ["w", "o"]


async def test_take_queued_and_start_now() -> None:
    run = Runner()
    d = Dispatcher(registry=registry(concurrency=1), default_limit=1, run=run)
    a, b, c = job("a"), job("b"), job("c")
    d.submit(a)
    d.submit(b)
    d.submit(c)
    await settle()
    d.start_now(c)  # e.g. cancelled while queued: settled outside the bulkhead
    await settle()
    assert run.started == ["a", "c"]
    assert [j.client_request_id for j in d.take_queued()] == ["b"]
    assert d.queued == 0
    for rid in "abc":
        run.release(rid)
    await settle()
    assert run.started == ["a", "c"]


async def test_a_crashing_job_frees_its_slot() -> None:
    started: list[str] = []

    async def run(j: Job) -> None:
        started.append(j.client_request_id)
        raise RuntimeError("boom")

    d = Dispatcher(registry=registry(concurrency=1), default_limit=1, run=run)
    d.submit(job("a"))
    d.submit(job("b"))
    await settle()
    assert started == ["a", "b"]
    assert d.running == 0


# --- stop reasons --------------------------------------------------------------------------------


def test_stronger_stop_reason_wins() -> None:
    j = job("a")
    j.request_stop(StopReason.SHUTDOWN)
    j.request_stop(StopReason.CANCEL)
    j.request_stop(StopReason.SHUTDOWN)
    assert j.stop_reason is StopReason.CANCEL and j.stopped.is_set()
    j.request_stop(StopReason.LOST)
    assert j.stop_reason is StopReason.LOST


# --- stream records ------------------------------------------------------------------------------


def stream_record(
    event: str, new: dict[str, Any] | None, old: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"Keys": {"request_id": {"S": "r1"}}, "SequenceNumber": "1"}
    if new is not None:
        body["NewImage"] = serialize_item({"request_id": "r1", "payload": '{"x":1}', **new})
    if old is not None:
        body["OldImage"] = serialize_item({"request_id": "r1", **old})
    return {"eventName": event, "dynamodb": body}


def test_insert_of_a_pending_request_is_a_candidate() -> None:
    cand = candidate_from_record(stream_record("INSERT", {"status": "PENDING", "attempt": 1}))
    assert cand == Candidate(request_id="r1", attempt=1, not_before=None)


def test_our_own_claim_is_not_a_candidate() -> None:
    rec = stream_record("MODIFY", {"status": "PROCESSING", "attempt": 1}, {"status": "PENDING", "attempt": 1})
    assert candidate_from_record(rec) is None


def test_retry_is_a_candidate_with_not_before() -> None:
    rec = stream_record(
        "MODIFY",
        {"status": "PENDING", "attempt": 2, "not_before": 123.5},
        {"status": "PROCESSING", "attempt": 1},
    )
    assert candidate_from_record(rec) == Candidate(request_id="r1", attempt=2, not_before=123.5)


def test_released_claim_is_a_candidate_at_the_same_attempt() -> None:
    rec = stream_record("MODIFY", {"status": "PENDING", "attempt": 1}, {"status": "PROCESSING", "attempt": 1})
    assert candidate_from_record(rec) == Candidate(request_id="r1", attempt=1)


def test_other_edits_of_a_pending_request_and_removals_are_not_candidates() -> None:
    same = stream_record("MODIFY", {"status": "PENDING", "attempt": 1}, {"status": "PENDING", "attempt": 1})
    assert candidate_from_record(same) is None
    assert candidate_from_record(stream_record("REMOVE", None, {"status": "PENDING", "attempt": 1})) is None
    done = stream_record(
        "MODIFY", {"status": "COMPLETED", "attempt": 1}, {"status": "PROCESSING", "attempt": 1}
    )
    assert candidate_from_record(done) is None


def test_cancel_signal_only_on_the_change() -> None:
    rec = stream_record(
        "MODIFY",
        {"status": "PROCESSING", "attempt": 2, "owner": "w1", "cancel_requested": True},
        {"status": "PROCESSING", "attempt": 2, "owner": "w1", "cancel_requested": False},
    )
    signal = cancel_from_record(rec)
    assert signal is not None and (signal.owner, signal.attempt) == ("w1", 2)
    again = stream_record(
        "MODIFY",
        {"status": "PROCESSING", "owner": "w1", "cancel_requested": True},
        {"status": "PROCESSING", "owner": "w1", "cancel_requested": True},
    )
    assert cancel_from_record(again) is None


def test_an_offered_insert_is_held_until_offer_until_but_a_later_pending_record_is_not() -> None:
    insert = stream_record("INSERT", {"status": "PENDING", "attempt": 1, "offer_until": 50.0}, None)
    assert candidate_from_record(insert) == Candidate(request_id="r1", attempt=1, offer_until=50.0)
    # A retry keeps the attribute on the item, but nobody offered the retry.
    retry = stream_record(
        "MODIFY",
        {"status": "PENDING", "attempt": 2, "offer_until": 50.0},
        {"status": "PROCESSING", "attempt": 1, "offer_until": 50.0},
    )
    assert candidate_from_record(retry) == Candidate(request_id="r1", attempt=2)


def test_settled_is_a_request_leaving_pending_at_an_attempt() -> None:
    claimed = stream_record(
        "MODIFY", {"status": "PROCESSING", "attempt": 1}, {"status": "PENDING", "attempt": 1}
    )
    assert settled_from_record(claimed) == ("r1", 1)
    cancelled = stream_record(
        "MODIFY", {"status": "CANCELLED", "attempt": 1}, {"status": "PENDING", "attempt": 1}
    )
    assert settled_from_record(cancelled) == ("r1", 1)
    assert settled_from_record(stream_record("INSERT", {"status": "PENDING", "attempt": 1}, None)) is None
    edit = stream_record("MODIFY", {"status": "PENDING", "attempt": 1}, {"status": "PENDING", "attempt": 1})
    assert settled_from_record(edit) is None
    released = stream_record(
        "MODIFY", {"status": "PENDING", "attempt": 1}, {"status": "PROCESSING", "attempt": 1}
    )
    assert settled_from_record(released) is None


class _CountingRequests:
    """Counts claims (a unit fake: the Claimer's scheduling is the point here)."""

    def __init__(self) -> None:
        self.claims: list[str] = []

    async def claim(self, request_id: str, **_: Any) -> RequestRecord:
        self.claims.append(request_id)
        return record(request_id)


async def test_a_held_candidate_is_claimed_after_the_grace_unless_settled_first() -> None:
    store = _CountingRequests()
    won: list[RequestRecord] = []
    claimer = Claimer(
        requests=store,  # type: ignore[arg-type]
        worker_id="w",
        claim_seconds=5,
        on_claimed=lambda r, s: won.append(r),
    )
    soon = time.time() + 0.05
    assert not await claimer.offer(Candidate(request_id="kept", attempt=1, offer_until=soon))
    assert not await claimer.offer(Candidate(request_id="taken", attempt=1, offer_until=soon))
    assert claimer.scheduled == 2 and store.claims == []
    assert claimer.settle("taken", 1)  # its claim's record showed up on the stream
    await asyncio.sleep(0.2)
    assert store.claims == ["kept"] and [r.client_request_id for r in won] == ["kept"]
    claimer.stop()


# --- fan-out (with a tiny fake sender: unit test only) ------------------------------------------------


class FakeSender:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self.finals: list[bool] = []

    async def send_many(
        self, connection_ids: Any, message: Any, *, final: bool = False, endpoints: Any = None
    ) -> Any:
        ids = list(connection_ids)
        self.calls.append((ids, dict(message)))
        self.finals.append(final)
        return type("R", (), {"delivered": len(ids)})()


class FakeSubscriptions:
    def __init__(self, subs: list[Subscription]) -> None:
        self.subs = subs
        self.queries = 0

    async def for_request(self, request_id: str, *, page_size: int | None = None) -> list[Subscription]:
        self.queries += 1
        return [s for s in self.subs if s.request_id == request_id]


def sub(cid: str, tenant: str = "t") -> Subscription:
    return Subscription(
        request_id=request_key("t", "r1"),
        connection_id=cid,
        user_id="u",
        tenant_id=tenant,
        created_at=0,
        ttl=0,
    )


async def test_fanout_reaches_owner_and_same_tenant_subscribers_once() -> None:
    sender = FakeSender()
    subs = FakeSubscriptions([sub("s1"), sub("c"), sub("evil", tenant="other")])
    fan = Fanout(sender=sender, subscriptions=subs, cache_seconds=60)  # type: ignore[arg-type]
    rec = dataclasses.replace(record("r1"), subscribed=True)  # $subscribe marked it
    assert await fan.publish(rec, {"type": "progress"})
    assert await fan.publish(rec, {"type": "progress"})
    assert sender.calls[0][0] == ["c", "s1"]
    assert subs.queries == 1, "the subscriber list is cached between progress frames"
    await fan.publish(rec, {"type": "complete"}, final=True)
    assert subs.queries == 2, "the terminal frame re-reads the subscribers"
    assert sender.finals == [False, False, True], "only the terminal frame may bypass a breaker"


async def test_fanout_queries_no_subscribers_for_an_unmarked_request() -> None:
    sender = FakeSender()
    subs = FakeSubscriptions([sub("s1")])
    fan = Fanout(sender=sender, subscriptions=subs, cache_seconds=60)  # type: ignore[arg-type]
    rec = record("r1")  # nobody ran $subscribe on it
    assert await fan.publish(rec, {"type": "progress"})
    await fan.publish(rec, {"type": "complete"}, final=True)
    assert [call[0] for call in sender.calls] == [["c"], ["c"]]
    assert subs.queries == 0
