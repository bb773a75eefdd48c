"""streamer.delivery against real connect pods and real (failing) gRPC servers.

Pods are the real connect service (in-process, or two ``python -m services.connect``
processes for the broadcast); the failing ones are small Connections servicers that
answer UNAVAILABLE or hang, bound to 127.0.0.1. A "dead pod" is a free port nobody
listens on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import grpc
import pytest
from connect_helpers import ConnectProcess, eventually, open_ws, receive_close, receive_json, sample
from grpc import aio

from services.connect.service import ConnectService
from streamer import rpc
from streamer.api.v1 import connections_pb2, connections_pb2_grpc
from streamer.config import Settings
from streamer.delivery import Delivery, PublishResult
from streamer.local.ports import free_port
from streamer.store import ConnectionRecord, Store

MESSAGE = {"type": "message", "text": "hello"}


class FakePod(connections_pb2_grpc.ConnectionsServicer):
    """A connect pod that fails its first ``fail_first`` calls, or hangs while ``hang``."""

    def __init__(self) -> None:
        self.fail_first = 0
        self.code = grpc.StatusCode.UNAVAILABLE
        self.calls = 0
        self.hang = False
        self.released = asyncio.Event()

    async def _enter(self, context: aio.ServicerContext) -> None:
        self.calls += 1
        if self.calls <= self.fail_first:
            await context.abort(self.code, "failing on purpose")
        if self.hang:
            await self.released.wait()

    async def Send(
        self, request: connections_pb2.SendRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendResponse:
        await self._enter(context)
        return connections_pb2.SendResponse(delivered=True)

    async def SendMany(
        self, request: connections_pb2.SendManyRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendManyResponse:
        await self._enter(context)
        return connections_pb2.SendManyResponse(delivered=list(request.connection_ids))

    async def SendToAudience(
        self, request: connections_pb2.SendToAudienceRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendToAudienceResponse:
        await self._enter(context)
        return connections_pb2.SendToAudienceResponse(matched=1, delivered=1)

    async def Disconnect(
        self, request: connections_pb2.DisconnectRequest, context: aio.ServicerContext
    ) -> connections_pb2.DisconnectResponse:
        await self._enter(context)
        return connections_pb2.DisconnectResponse(disconnected=True)


@pytest.fixture
async def fake_pod() -> AsyncIterator[tuple[FakePod, str]]:
    pod = FakePod()
    server = rpc.create_server()
    connections_pb2_grpc.add_ConnectionsServicer_to_server(pod, server)
    port = rpc.bind(server, host="127.0.0.1", port=0)
    await server.start()
    yield pod, f"127.0.0.1:{port}"
    pod.released.set()
    await server.stop(grace=None)


@pytest.fixture
async def make_delivery(store: Store, connect_settings: Settings) -> AsyncIterator[Callable[..., Delivery]]:
    made: list[Delivery] = []

    def make(**kwargs: Any) -> Delivery:
        kwargs.setdefault("base_delay", 0.01)
        delivery = Delivery(store=store, settings=connect_settings, **kwargs)
        made.append(delivery)
        return delivery

    yield make
    for delivery in made:
        await delivery.close()


async def put_record(store: Store, *, endpoint: str, tenant: str, user: str = "ghost") -> str:
    cid = str(uuid.uuid4())
    await store.connections.put(
        ConnectionRecord.new(connection_id=cid, user_id=user, tenant_id=tenant, endpoint=endpoint)
    )
    return cid


async def test_send_reaches_a_live_connection(
    connect: ConnectService, make_delivery: Callable[..., Delivery], tenant: str, http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    [cid] = list(connect.connections)
    delivery = make_delivery()
    assert await delivery.send(cid, MESSAGE) is True
    assert await receive_json(ws) == MESSAGE
    # Second send uses the cached endpoint and the same channel.
    assert await delivery.send(cid, {**MESSAGE, "n": 2}) is True
    assert (await receive_json(ws))["n"] == 2
    await ws.close()


async def test_send_to_a_connection_without_record_is_false(make_delivery: Callable[..., Delivery]) -> None:
    assert await make_delivery().send("never-connected", MESSAGE) is False


async def test_not_found_deletes_the_stale_record_and_its_subscriptions(
    connect: ConnectService, make_delivery: Callable[..., Delivery], store: Store, tenant: str
) -> None:
    cid = await put_record(store, endpoint=connect.endpoint, tenant=tenant)
    await store.subscriptions.subscribe(
        request_id="r-9", connection_id=cid, user_id="ghost", tenant_id=tenant
    )
    before = sample("streamer_delivery_sends_total", outcome="not_found")
    assert await make_delivery().send(cid, MESSAGE) is False
    assert await store.connections.get(cid) is None
    assert await store.subscriptions.for_connection(cid) == []
    assert sample("streamer_delivery_sends_total", outcome="not_found") == before + 1


async def test_a_briefly_unreachable_pod_keeps_its_records_and_subscriptions(
    make_delivery: Callable[..., Delivery], store: Store, tenant: str
) -> None:
    """Regression (#18 item 7): a pod unreachable for a moment (a restart at the same
    address, a network blip) had its live connections' records *and subscriptions*
    deleted; connect writes the record back on its next touch, but the subscriptions
    were lost for good, and with them the results of the requests they followed."""
    cid = await put_record(store, endpoint=f"127.0.0.1:{free_port()}", tenant=tenant)
    await store.subscriptions.subscribe(
        request_id="r-7", connection_id=cid, user_id="ghost", tenant_id=tenant
    )
    delivery = make_delivery()
    assert await delivery.send(cid, MESSAGE) is False
    assert await delivery.send_many([cid], MESSAGE, final=True) == PublishResult(
        matched=1, delivered=0, failed=1
    )
    assert await store.connections.get(cid) is not None
    assert [s.request_id for s in await store.subscriptions.for_connection(cid)] == ["r-7"]


async def test_an_unreachable_pod_loses_records_unseen_for_long(
    make_delivery: Callable[..., Delivery], store: Store, tenant: str
) -> None:
    """What an unreachable pod's connect has not refreshed for ``stale_after`` is gone."""
    cid = await put_record(store, endpoint=f"127.0.0.1:{free_port()}", tenant=tenant)
    await store.subscriptions.subscribe(
        request_id="r-8", connection_id=cid, user_id="ghost", tenant_id=tenant
    )
    await asyncio.sleep(0.05)
    assert await make_delivery(stale_after=0.01).send(cid, MESSAGE) is False
    assert await store.connections.get(cid) is None
    assert await store.subscriptions.for_connection(cid) == []


async def test_stale_delete_spares_a_record_that_moved(
    connect: ConnectService, make_delivery: Callable[..., Delivery], store: Store, tenant: str
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cid = await put_record(store, endpoint=dead, tenant=tenant)
    delivery = make_delivery(cache_ttl=60)
    assert await delivery._lookup(cid) == dead  # the cache now says "dead"
    # Meanwhile the record is rewritten to point at a live pod.
    await store.connections.put(
        ConnectionRecord.new(connection_id=cid, user_id="ghost", tenant_id=tenant, endpoint=connect.endpoint)
    )
    assert await delivery.send(cid, MESSAGE) is False
    record = await store.connections.get(cid)
    assert record is not None and record.endpoint == connect.endpoint


async def test_transient_failures_are_retried(
    fake_pod: tuple[FakePod, str], make_delivery: Callable[..., Delivery], store: Store, tenant: str
) -> None:
    pod, address = fake_pod
    pod.fail_first = 2
    cid = await put_record(store, endpoint=address, tenant=tenant)
    assert await make_delivery(attempts=3).send(cid, MESSAGE) is True
    assert pod.calls == 3


async def test_a_pod_that_answers_with_errors_keeps_its_records(
    fake_pod: tuple[FakePod, str], make_delivery: Callable[..., Delivery], store: Store, tenant: str
) -> None:
    pod, address = fake_pod
    pod.fail_first = 10**6
    cid = await put_record(store, endpoint=address, tenant=tenant)
    assert await make_delivery(attempts=3, breaker_threshold=100).send(cid, MESSAGE) is False
    assert pod.calls == 3
    assert await store.connections.get(cid) is not None  # reachable: not proof the socket is gone


async def test_non_retryable_errors_are_not_retried(
    fake_pod: tuple[FakePod, str], make_delivery: Callable[..., Delivery], store: Store, tenant: str
) -> None:
    pod, address = fake_pod
    pod.fail_first = 10**6
    pod.code = grpc.StatusCode.INTERNAL
    cid = await put_record(store, endpoint=address, tenant=tenant)
    assert await make_delivery(attempts=3).send(cid, MESSAGE) is False
    assert pod.calls == 1


async def test_breaker_opens_fails_fast_and_lets_a_trial_through_after_reset(
    fake_pod: tuple[FakePod, str], make_delivery: Callable[..., Delivery], store: Store, tenant: str
) -> None:
    pod, address = fake_pod
    pod.fail_first = 10**6
    cid = await put_record(store, endpoint=address, tenant=tenant)
    delivery = make_delivery(attempts=3, breaker_threshold=3, breaker_reset=0.3)
    opened = sample("streamer_delivery_breaker_open_total")
    fast = sample("streamer_delivery_sends_total", outcome="breaker_open")

    assert await delivery.send(cid, MESSAGE) is False
    assert pod.calls == 3
    assert sample("streamer_delivery_breaker_open_total") == opened + 1
    # Open: no call reaches the pod.
    for _ in range(5):
        assert await delivery.send(cid, MESSAGE) is False
    assert pod.calls == 3
    assert sample("streamer_delivery_sends_total", outcome="breaker_open") == fast + 5

    # After the reset one trial goes through; it fails, so the breaker opens again at once.
    async def trial_made() -> bool:
        await delivery.send(cid, MESSAGE)
        return pod.calls > 3

    await eventually(trial_made, what="a trial call after the reset")
    assert pod.calls == 4
    assert sample("streamer_delivery_breaker_open_total") == opened + 2

    # The pod recovers: the next trial succeeds and closes the breaker.
    pod.fail_first = 0

    async def recovered() -> bool:
        return await delivery.send(cid, MESSAGE)

    await eventually(recovered, what="delivery after the pod recovered")
    calls = pod.calls
    assert await delivery.send(cid, MESSAGE) is True
    assert pod.calls == calls + 1


async def test_two_pod_broadcast(
    spawn_connect: Callable[..., Awaitable[ConnectProcess]],
    make_delivery: Callable[..., Delivery],
    store: Store,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    pod_a, pod_b = await asyncio.gather(spawn_connect(), spawn_connect())
    assert pod_a.endpoint != pod_b.endpoint
    # Both pods listed themselves before accepting a socket (the directory a fan-out reads).
    assert {pod_a.endpoint, pod_b.endpoint} <= set(await store.pods.live())
    alice_a = await open_ws(http, pod_a.ws_port, tenant=tenant, user="alice")
    alice_b = await open_ws(http, pod_b.ws_port, tenant=tenant, user="alice")
    bob_b = await open_ws(http, pod_b.ws_port, tenant=tenant, user="bob")
    # Another tenant on both pods, with ids that collide with ours if joined with a separator.
    other_tenant = f"{tenant}#alice"
    outsider_a = await open_ws(http, pod_a.ws_port, tenant=other_tenant, user="alice")
    outsider_b = await open_ws(http, pod_b.ws_port, tenant=other_tenant, user="bob")
    records = await store.connections.by_tenant(tenant)
    assert sorted(r.endpoint for r in records) == sorted([pod_a.endpoint, pod_b.endpoint, pod_b.endpoint])
    # A stale record on pod B (its socket is long gone): a fan-out reads no record, so it
    # neither counts nor is touched; sending to it by id (below) cleans it.
    stale = await put_record(store, endpoint=pod_b.endpoint, tenant=tenant, user="alice")

    delivery = make_delivery()
    result = await delivery.to_tenant(tenant, {"type": "message", "to": "tenant"})
    assert result == PublishResult(matched=3, delivered=3, failed=0)
    for ws in (alice_a, alice_b, bob_b):
        assert await receive_json(ws) == {"type": "message", "to": "tenant"}
    assert await store.connections.get(stale) is not None

    result = await delivery.to_user(
        tenant_id=tenant, user_id="alice", message={"type": "message", "to": "alice"}
    )
    assert result == PublishResult(matched=2, delivered=2, failed=0)
    for ws in (alice_a, alice_b):
        assert await receive_json(ws) == {"type": "message", "to": "alice"}

    result = await delivery.to_tenant(other_tenant, {"type": "message", "to": "other"})
    assert result == PublishResult(matched=2, delivered=2, failed=0)
    for ws in (outsider_a, outsider_b):
        assert await receive_json(ws) == {"type": "message", "to": "other"}
    # Ids are matched exactly, never as prefixes or joined strings.
    assert (await delivery.to_tenant(f"{tenant}#", MESSAGE)).matched == 0
    assert (await delivery.to_user(tenant_id=tenant, user_id="alice#", message=MESSAGE)).matched == 0
    assert (await delivery.to_user(tenant_id=other_tenant, user_id="alice", message=MESSAGE)).matched == 1
    assert await receive_json(outsider_a) == MESSAGE

    ids = [r.connection_id for r in records]
    result = await delivery.send_many([*ids, stale], {"type": "message", "to": "some"})
    assert result == PublishResult(matched=4, delivered=3, failed=1)
    for ws in (alice_a, alice_b, bob_b):
        assert await receive_json(ws) == {"type": "message", "to": "some"}
    assert await store.connections.get(stale) is None

    # Each socket got exactly what was meant for it: the next frame is its own pong.
    for ws in (alice_a, alice_b, bob_b, outsider_a, outsider_b):
        await ws.send_json({"action": "$ping"})
        assert (await receive_json(ws))["type"] == "pong"

    bob_id = next(r.connection_id for r in records if r.user_id == "bob")
    assert await delivery.disconnect(bob_id, code=4001, reason="bye bob") is True
    assert await receive_close(bob_b) == (4001, "bye bob")
    for ws in (alice_a, alice_b, outsider_a, outsider_b):
        await ws.close()


async def test_a_slow_pod_does_not_delay_the_others(
    connect: ConnectService,
    fake_pod: tuple[FakePod, str],
    make_delivery: Callable[..., Delivery],
    store: Store,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    pod, address = fake_pod
    pod.hang = True
    clients = [await open_ws(http, connect, tenant=tenant, user=f"u{i}") for i in range(2)]
    await store.pods.beat(address, duration=60)  # the hung pod is listed as a connect pod
    # generous: under CI load the two live clients must get the frame before this expires
    delivery = make_delivery(pod_timeout=6.0, call_timeout=20.0)
    try:
        broadcast = asyncio.create_task(delivery.to_tenant(tenant, MESSAGE))
        for ws in clients:
            assert await receive_json(ws) == MESSAGE
        assert not broadcast.done()  # still waiting for the hung pod, yet the others have it
        result = await broadcast
    finally:
        await store.pods.leave(address)
    assert pod.calls == 1  # the hung pod was called (its call may land after the fast pods')
    # Only a pod knows its sockets: one that does not answer in time counts nothing.
    assert result == PublishResult(matched=2, delivered=2, failed=0)
    for ws in clients:
        await ws.close()


async def test_a_final_frame_that_cannot_reach_a_live_record_is_counted_dropped(
    connect: ConnectService,
    make_delivery: Callable[..., Delivery],
    store: Store,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    """streamer_delivery_final_dropped_total feeds the StreamerFinalFramesDropped alert: a
    final frame that a connection record pointed somewhere but that did not arrive. A
    connection without a record (the client is gone) is not a drop; a delivered one neither."""

    def dropped() -> float:
        return sample("streamer_delivery_final_dropped_total")

    before = dropped()
    unreachable = await put_record(store, endpoint=f"127.0.0.1:{free_port()}", tenant=tenant)
    delivery = make_delivery(final_attempts=1)
    assert await delivery.send(unreachable, MESSAGE, final=True) is False
    assert dropped() == before + 1
    result = await delivery.send_many([unreachable, "never-connected"], MESSAGE, final=True)
    assert result.delivered == 0
    assert dropped() == before + 2  # the one with a record, not the one without
    assert await delivery.send(unreachable, MESSAGE) is False  # progress frames are not counted
    assert dropped() == before + 2
    ws = await open_ws(http, connect, tenant=tenant)
    [live] = list(connect.connections)
    assert await delivery.send(live, MESSAGE, final=True) is True
    assert await receive_json(ws) == MESSAGE
    assert dropped() == before + 2
    await ws.close()
