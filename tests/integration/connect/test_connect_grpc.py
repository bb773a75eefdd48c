"""The Connections gRPC service over a real channel: Send, SendMany, Disconnect."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import grpc
import pytest
from connect_helpers import FakeRouter, eventually, open_ws, receive_close, receive_json
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.connect.service import ConnectService
from streamer import protocol, rpc
from streamer.api.v1 import connections_pb2, connections_pb2_grpc
from streamer.store import Store


@pytest.fixture
async def stub(connect: ConnectService) -> AsyncIterator[connections_pb2_grpc.ConnectionsAsyncStub]:
    async with aio.insecure_channel(connect.endpoint) as channel:
        yield connections_pb2_grpc.ConnectionsStub(channel)


async def test_send_delivers_a_frame_as_is(
    connect: ConnectService,
    stub: connections_pb2_grpc.ConnectionsAsyncStub,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    [cid] = list(connect.connections)
    frame = protocol.progress_message("r-1", percentage=50, message="half", seq=3)
    reply = await stub.Send(connections_pb2.SendRequest(connection_id=cid, frame=rpc.dumps(frame)), timeout=5)
    assert reply.delivered is True
    assert await receive_json(ws) == frame
    await ws.close()


async def test_send_to_a_connection_not_here_is_not_found(
    stub: connections_pb2_grpc.ConnectionsAsyncStub,
) -> None:
    with pytest.raises(aio.AioRpcError) as info:
        await stub.Send(connections_pb2.SendRequest(connection_id="nope", frame=b'{"type":"x"}'), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_send_refuses_a_frame_that_is_not_utf8(
    connect: ConnectService,
    stub: connections_pb2_grpc.ConnectionsAsyncStub,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    [cid] = list(connect.connections)
    with pytest.raises(aio.AioRpcError) as info:
        await stub.Send(connections_pb2.SendRequest(connection_id=cid, frame=b"\xff\xfe"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await ws.close()


async def test_send_many_reports_each_id(
    connect: ConnectService,
    stub: connections_pb2_grpc.ConnectionsAsyncStub,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    a = await open_ws(http, connect, tenant=tenant, user="a")
    b = await open_ws(http, connect, tenant=tenant, user="b")
    ids = list(connect.connections)
    frame = {"type": "message", "text": "to all"}
    reply = await stub.SendMany(
        connections_pb2.SendManyRequest(connection_ids=[*ids, "gone-1", ids[0]], frame=rpc.dumps(frame)),
        timeout=5,
    )
    assert sorted(reply.delivered) == sorted(ids)
    assert list(reply.not_found) == ["gone-1"]
    assert list(reply.failed) == []
    assert await receive_json(a) == frame
    assert await receive_json(b) == frame
    await a.close()
    await b.close()


async def test_disconnect_flushes_queued_frames_then_closes_with_the_code_and_reason(
    connect: ConnectService,
    stub: connections_pb2_grpc.ConnectionsAsyncStub,
    tenant: str,
    store: Store,
    http: aiohttp.ClientSession,
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    [cid] = list(connect.connections)
    last = {"type": "error", "error": {"code": "FORBIDDEN", "message": "bye"}}
    await stub.Send(connections_pb2.SendRequest(connection_id=cid, frame=rpc.dumps(last)), timeout=5)
    reply = await stub.Disconnect(
        connections_pb2.DisconnectRequest(
            connection_id=cid, code=protocol.CLOSE_DISCONNECTED, reason="kicked"
        ),
        timeout=5,
    )
    assert reply.disconnected is True
    assert await receive_json(ws) == last
    assert await receive_close(ws) == (protocol.CLOSE_DISCONNECTED, "kicked")

    async def gone() -> bool:
        return await store.connections.get(cid) is None

    await eventually(gone, what="record removed after Disconnect")
    with pytest.raises(aio.AioRpcError) as info:
        await stub.Disconnect(connections_pb2.DisconnectRequest(connection_id=cid), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_disconnect_defaults_to_1000_and_refuses_reserved_codes(
    connect: ConnectService,
    stub: connections_pb2_grpc.ConnectionsAsyncStub,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    [cid] = list(connect.connections)
    for code in (1005, 1006, 1015, 999, 5000):
        with pytest.raises(aio.AioRpcError) as info:
            await stub.Disconnect(connections_pb2.DisconnectRequest(connection_id=cid, code=code), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await stub.Disconnect(connections_pb2.DisconnectRequest(connection_id=cid), timeout=5)
    assert await receive_close(ws) == (protocol.CLOSE_NORMAL, "disconnected")


async def test_grpc_health_is_serving(connect: ConnectService) -> None:
    async with aio.insecure_channel(connect.endpoint) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="streamer.v1.Connections"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_pushed_frame_waits_for_its_requests_route_answer(
    connect: ConnectService,
    router: tuple[FakeRouter, str],
    stub: connections_pb2_grpc.ConnectionsAsyncStub,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    """Direct dispatch can start a request before the router's answer is back here: its
    progress must still reach the client after that answer, and other frames not wait."""
    servicer, _ = router
    ws = await open_ws(http, connect, tenant=tenant)
    [cid] = list(connect.connections)
    await ws.send_json({"action": "slow", "id": "r-held", "payload": {}})
    await eventually(lambda: servicer.slow_started == 1, what="the route is in flight")
    early = protocol.progress_message("r-held", percentage=0, message="started", seq=1)
    other = protocol.progress_message("r-other", percentage=50, message="half", seq=1)
    for frame in (early, other):
        reply = await stub.Send(
            connections_pb2.SendRequest(connection_id=cid, frame=rpc.dumps(frame)), timeout=5
        )
        assert reply.delivered is True
    assert await receive_json(ws) == other  # not held: its request is not being routed here
    servicer.release.set()
    answer = await receive_json(ws)
    assert (answer["type"], answer["request_id"]) == ("response", "r-held")
    assert await receive_json(ws) == early  # released right after the answer
    await ws.close()


async def test_send_to_audience_reaches_the_tenant_or_the_user_and_validates(
    connect: ConnectService,
    stub: connections_pb2_grpc.ConnectionsAsyncStub,
    tenant: str,
    http: aiohttp.ClientSession,
) -> None:
    a = await open_ws(http, connect, tenant=tenant, user="a")
    b = await open_ws(http, connect, tenant=tenant, user="b")
    frame = {"type": "message", "n": 1}
    reply = await stub.SendToAudience(
        connections_pb2.SendToAudienceRequest(tenant_id=tenant, frame=rpc.dumps(frame)), timeout=5
    )
    assert (reply.matched, reply.delivered, reply.failed) == (2, 2, 0)
    assert await receive_json(a) == frame and await receive_json(b) == frame
    reply = await stub.SendToAudience(
        connections_pb2.SendToAudienceRequest(tenant_id=tenant, user_id="b", frame=rpc.dumps(frame)),
        timeout=5,
    )
    assert (reply.matched, reply.delivered) == (1, 1)
    assert await receive_json(b) == frame
    for bad in (
        connections_pb2.SendToAudienceRequest(tenant_id="", frame=rpc.dumps(frame)),
        connections_pb2.SendToAudienceRequest(tenant_id=tenant, frame=b"\xff"),
        connections_pb2.SendToAudienceRequest(tenant_id=tenant, frame=b""),
    ):
        with pytest.raises(aio.AioRpcError) as info:
            await stub.SendToAudience(bad, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await a.send_json({"action": "$ping"})
    assert (await receive_json(a))["type"] == "pong"  # nothing else reached a
    await a.close()
    await b.close()
