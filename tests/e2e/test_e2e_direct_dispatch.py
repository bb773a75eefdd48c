"""Direct dispatch on real processes: the router's ``Processor.Offer`` and its fallbacks.

The offer grace (``STREAMER_OFFER_GRACE_SECONDS``) and the sweeper's pending grace
are set so each path is told apart by the processors' own counters, not by time:

- offered and claimed at once: the stream reader held the INSERT and dropped it when
  the claim's record followed — no claim attempt of its own (no ``refused`` claim);
- offer lost (the router's only processor address answers nothing): the stream
  reader claims after the grace;
- processor refuses (its lane is full): the stream reader claims after the grace;
- processor dies after taking the offer: its claim expires and another claims it.

Every case still ends exactly once.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from e2e_helpers import Recorder, connect, eventually, running_stack
from metricslib import scrape

from streamer.local.stack import LocalStack
from streamer.store import COMPLETED, RequestRecord, Store, request_key

#: Long enough that neither the stream reader (offer grace) nor the sweeper (pending
#: grace) can claim a request before the tests look.
SLOW_FALLBACK = {"STREAMER_OFFER_GRACE_SECONDS": "4", "STREAMER_PENDING_GRACE_SECONDS": "120"}


async def counters(stack: LocalStack, service: str, name: str) -> dict[str, float]:
    """One counter of one service's /metrics, by its single label's value."""
    return (await scrape(stack.service(service).http_port)).by(name)


async def processor_counters(stack: LocalStack, name: str) -> dict[str, float]:
    total: dict[str, float] = {}
    for service in (n for n, s in stack.services.items() if s.kind == "processor" and s.running):
        for label, value in (await counters(stack, service, name)).items():
            total[label] = total.get(label, 0.0) + value
    return total


def delta(after: dict[str, float], before: dict[str, float], label: str) -> float:
    return after.get(label, 0.0) - before.get(label, 0.0)


async def record_of(stack: LocalStack, request_id: str, tenant: str = "acme") -> RequestRecord | None:
    async with Store.open(settings=stack.settings) as store:
        return await store.requests.get(request_key(tenant, request_id))


async def finished(stack: LocalStack, request_id: str) -> RequestRecord | None:
    record = await record_of(stack, request_id)
    return record if record is not None and record.terminal else None


@pytest.fixture(scope="module")
async def stack(dynamodb: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalStack]:
    env = {
        **SLOW_FALLBACK,
        "STREAMER_HANDLER_CONCURRENCY": "1",  # a lane is full with 1 running + 1 waiting
        "STREAMER_CLAIM_SECONDS": "2",
    }
    async with running_stack(dynamodb, tmp_path_factory.mktemp("stack"), env=env, processors=2) as st:
        yield st


async def test_offered_request_is_claimed_once_by_the_offered_processor(stack: LocalStack) -> None:
    offers = await processor_counters(stack, "streamer_processor_offers_total")
    claims = await processor_counters(stack, "streamer_processor_claims_total")
    recorder = Recorder()
    async with connect(stack, on_message=recorder) as client:
        ids = []
        for _ in range(3):
            handle = await client.start("echo_async", {"message": "hi"})
            ids.append(handle.request_id)
            # The stream path could only claim after 4 s and the sweeper after 120 s:
            # well within both, the offer alone ran it.
            assert (await handle.result(timeout=3.5))["message"] == "hi"
    offers_after = await processor_counters(stack, "streamer_processor_offers_total")
    assert delta(offers_after, offers, "accepted") == 3
    # The stream reader saw each INSERT and then the claim's record (in the same batch
    # or a later one) and claimed nothing itself — not even once the grace was over.
    await asyncio.sleep(float(SLOW_FALLBACK["STREAMER_OFFER_GRACE_SECONDS"]) + 1.0)
    claims_after = await processor_counters(stack, "streamer_processor_claims_total")
    assert delta(claims_after, claims, "won") == 3
    assert delta(claims_after, claims, "refused") == 0
    for request_id in ids:
        kinds = [m["type"] for m in recorder.of(request_id)]
        assert kinds[0] == "acknowledgment" and kinds.count("complete") == 1


async def test_saturated_processors_refuse_and_the_stream_takes_the_rest(stack: LocalStack) -> None:
    offers = await processor_counters(stack, "streamer_processor_offers_total")
    async with connect(stack) as client:
        # 2 processors, each (1 running + 1 waiting) fill both lanes; the rest are refused.
        handles = [await client.start("delay", {"seconds": 0.6, "steps": 2}) for _ in range(6)]
        results = await asyncio.gather(*(h.result(timeout=90) for h in handles))
    assert results == [{"seconds": 0.6, "steps": 2}] * 6
    offers_after = await processor_counters(stack, "streamer_processor_offers_total")
    assert delta(offers_after, offers, "saturated") >= 1
    router = await counters(stack, "router", "streamer_router_offers_total")
    assert router.get("unplaced", 0) >= 1
    for handle in handles:
        record = await eventually(lambda h=handle: finished(stack, h.request_id))
        assert record.status == COMPLETED


async def test_processor_killed_after_taking_the_offer(stack: LocalStack) -> None:
    request_id = f"dk-{uuid.uuid4().hex[:12]}"
    recorder = Recorder()
    try:
        async with connect(stack, on_message=recorder) as client:
            started = asyncio.Event()
            handle = await client.start(
                "delay",
                {"seconds": 1.5, "steps": 3},
                request_id=request_id,
                on_progress=lambda p: started.set(),
            )
            await asyncio.wait_for(started.wait(), timeout=30)
            record = await record_of(stack, request_id)
            assert record is not None and record.owner
            holder = record.owner.rsplit("-", 1)[0]  # the stack names workers <service>-<hex>
            await stack.kill(holder)  # SIGKILL: the claim just expires
            result = await handle.result(timeout=90)
            await asyncio.sleep(1.0)  # a second complete would arrive about now
    finally:
        for name, service in stack.services.items():
            if not service.running:
                await stack.restart(name, kill_first=False)
    assert result == {"seconds": 1.5, "steps": 3}
    assert len(recorder.of(request_id, "complete")) == 1
    record = await eventually(lambda: finished(stack, request_id))
    assert record.status == COMPLETED and record.recoveries >= 1


async def test_offer_lost_the_stream_claims_after_the_grace(
    dynamodb: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A port bound but not listening: connections to it are refused, and no service of
    # the stack can be given it while the test holds it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as nowhere:
        nowhere.bind(("127.0.0.1", 0))
        env = {
            "STREAMER_PROCESSOR_ADDRESSES": f"127.0.0.1:{nowhere.getsockname()[1]}",
            "STREAMER_OFFER_GRACE_SECONDS": "0.5",
            "STREAMER_PENDING_GRACE_SECONDS": "120",
        }
        async with running_stack(dynamodb, tmp_path_factory.mktemp("lost"), env=env) as stack:
            claims = await processor_counters(stack, "streamer_processor_claims_total")
            async with connect(stack) as client:
                result = await client.request("echo_async", {"message": "lost"}, timeout=60)
            assert result["message"] == "lost"
            router = await counters(stack, "router", "streamer_router_offers_total")
            assert router.get("error", 0) >= 1 and router.get("accepted", 0) == 0
            # Claimed from the stream (the sweeper waits 120 s): held until the grace was
            # over, or at once when the reader only saw the INSERT after it.
            claims_after = await processor_counters(stack, "streamer_processor_claims_total")
            assert delta(claims_after, claims, "won") == 1
            assert delta(claims_after, claims, "refused") == 0


async def test_the_owner_is_reached_through_the_pod_stored_on_the_request(stack: LocalStack) -> None:
    """connect names its pod in RouteRequest and the request keeps it: the processor sends
    the owner's frames there without reading the connection record — shown by deleting
    that record first (a lookup would find nothing and deliver nothing)."""
    user = f"owner-{uuid.uuid4().hex[:8]}"
    async with connect(stack, user=user) as client, Store.open(settings=stack.settings) as store:
        records = await eventually(lambda: store.connections.by_user(user, tenant_id="acme"))
        assert len(records) == 1
        connection_id, endpoint = records[0].connection_id, records[0].endpoint
        assert await store.connections.delete(connection_id)
        handle = await client.start("echo_async", {"message": "hint"})
        assert (await handle.result(timeout=30))["message"] == "hint"
        record = await record_of(stack, handle.request_id)
        assert record is not None and record.connection_endpoint == endpoint
