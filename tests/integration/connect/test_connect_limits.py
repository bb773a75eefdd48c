"""Every per-connection limit of the gateway, against the real service and real sockets:
frame size, rate, the send queue of a client too slow to read, and the heartbeat.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from connect_helpers import (
    StartConnect,
    eventually,
    open_ws,
    receive_close,
    receive_json,
    sample,
)
from grpc import aio

from services.connect.session import ClientConnection
from streamer import protocol, rpc
from streamer.api.v1 import connections_pb2, connections_pb2_grpc
from streamer.store import Store

LIMIT = 1024


def frame_of(size: int) -> str:
    """A valid JSON message of exactly ``size`` bytes."""
    base = json.dumps({"action": "echo", "payload": {"pad": ""}})
    return json.dumps({"action": "echo", "payload": {"pad": "x" * (size - len(base))}})


async def test_frame_over_the_limit_is_refused_and_the_socket_stays_open(
    start_connect: StartConnect, tenant: str, http: aiohttp.ClientSession
) -> None:
    service = await start_connect(ws_max_frame_bytes=LIMIT)
    ws = await open_ws(http, service, tenant=tenant)
    # Exactly at the limit: routed normally.
    assert len(frame_of(LIMIT)) == LIMIT
    await ws.send_str(frame_of(LIMIT))
    assert (await receive_json(ws))["type"] == "response"
    before = sample("streamer_connect_rejected_frames_total", code=protocol.PAYLOAD_TOO_LARGE)
    for size in (LIMIT + 1, 4 * LIMIT):
        await ws.send_str(frame_of(size))
        error = await receive_json(ws)
        assert error["error"]["code"] == protocol.PAYLOAD_TOO_LARGE
        assert error["error"]["details"] == {"size": size, "limit": LIMIT}
    assert sample("streamer_connect_rejected_frames_total", code=protocol.PAYLOAD_TOO_LARGE) == before + 2
    await ws.send_json({"action": "$ping"})
    assert (await receive_json(ws))["type"] == "pong"
    await ws.close()


async def test_frame_far_over_the_limit_closes_with_1009(
    start_connect: StartConnect, tenant: str, store: Store, http: aiohttp.ClientSession
) -> None:
    service = await start_connect(ws_max_frame_bytes=LIMIT)
    closed = sample("streamer_connect_disconnects_total", reason="too_large")
    # One byte over the hard limit (4x): the gateway's own check, with a reason.
    ws = await open_ws(http, service, tenant=tenant)
    await ws.send_str(frame_of(4 * LIMIT + 1))
    assert await receive_close(ws) == (protocol.CLOSE_TOO_BIG, "frame too large")
    # Far over it: aiohttp stops reading at max_msg_size and closes with 1009 too.
    ws = await open_ws(http, service, tenant=tenant)
    await ws.send_str(frame_of(40 * LIMIT))
    code, _ = await receive_close(ws)
    assert code == protocol.CLOSE_TOO_BIG
    await eventually(
        lambda: sample("streamer_connect_disconnects_total", reason="too_large") == closed + 2,
        what="both counted as too_large",
    )

    async def no_records() -> bool:
        return await store.connections.by_tenant(tenant) == []

    await eventually(no_records, what="records removed")


async def test_rate_limit_answers_rate_limited_then_closes_with_1008(
    start_connect: StartConnect, tenant: str, http: aiohttp.ClientSession
) -> None:
    # 0.001 token/s: the bucket does not refill during the test.
    service = await start_connect(ws_rate_limit=0.001, ws_rate_burst=3, ws_rate_strikes=2)
    ws = await open_ws(http, service, tenant=tenant)
    for i in range(3):
        await ws.send_json({"action": "$ping", "id": f"p-{i}"})
        assert (await receive_json(ws))["type"] == "pong"
    for i in range(2):
        await ws.send_json({"action": "echo", "id": f"limited-{i}"})
        error = await receive_json(ws)
        assert error["error"]["code"] == protocol.RATE_LIMITED
        assert error["request_id"] == f"limited-{i}"  # the client can tell which request was refused
        assert error["error"]["retryable"] is True
        assert error["error"]["details"]["retry_after"] > 0
    await ws.send_json({"action": "$ping"})
    assert await receive_close(ws) == (protocol.CLOSE_POLICY, "rate limit exceeded")


async def test_rate_limit_zero_turns_it_off(
    start_connect: StartConnect, tenant: str, http: aiohttp.ClientSession
) -> None:
    service = await start_connect(ws_rate_limit=0.0, ws_rate_burst=1, ws_rate_strikes=1)
    ws = await open_ws(http, service, tenant=tenant)
    for _ in range(50):
        await ws.send_json({"action": "$ping"})
    for _ in range(50):
        assert (await receive_json(ws))["type"] == "pong"
    await ws.close()


async def test_client_too_slow_to_read_is_closed_with_1013(
    start_connect: StartConnect, tenant: str, store: Store, http: aiohttp.ClientSession
) -> None:
    service = await start_connect(ws_send_queue=4)
    failures = sample("streamer_connect_send_failures_total", reason="queue_full")
    ws = await open_ws(http, service, tenant=tenant)
    [cid] = list(service.connections)
    big = rpc.dumps({"type": "message", "pad": "x" * 256 * 1024})
    async with aio.insecure_channel(service.endpoint) as channel:
        stub = connections_pb2_grpc.ConnectionsStub(channel)
        # The client reads nothing: socket buffers fill, the writer blocks, the queue fills.
        for sent in range(2000):  # noqa: B007
            reply = await stub.Send(connections_pb2.SendRequest(connection_id=cid, frame=big), timeout=5)
            if not reply.delivered:
                break
        else:
            raise AssertionError("the send queue never filled")
    assert sent > 4
    assert sample("streamer_connect_send_failures_total", reason="queue_full") == failures + 1
    # Now read: the frames written before the overflow, then the close frame.
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            break
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert (msg.data, msg.extra) == (protocol.CLOSE_TRY_AGAIN, "client too slow to read")

    async def gone() -> bool:
        return await store.connections.get(cid) is None

    await eventually(gone, what="record removed")


async def test_heartbeat_closes_a_client_that_does_not_answer_pings(
    start_connect: StartConnect, tenant: str, store: Store, http: aiohttp.ClientSession
) -> None:
    service = await start_connect(ws_heartbeat_seconds=0.05, ws_missed_pongs=2)
    timeouts = sample("streamer_connect_disconnects_total", reason="heartbeat")
    ws = await open_ws(http, service, tenant=tenant, autoping=False)
    [cid] = list(service.connections)
    pings = 0
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type is aiohttp.WSMsgType.PING:
            pings += 1  # seen, not answered
            continue
        break
    assert msg.type is aiohttp.WSMsgType.CLOSE
    assert (msg.data, msg.extra) == (protocol.CLOSE_HEARTBEAT, "heartbeat timeout")
    assert pings >= 2

    async def gone() -> bool:
        return await store.connections.get(cid) is None

    await eventually(gone, what="record removed")
    assert sample("streamer_connect_disconnects_total", reason="heartbeat") == timeouts + 1


async def test_heartbeat_keeps_an_answering_client_and_touch_is_throttled(
    start_connect: StartConnect,
    tenant: str,
    store: Store,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Generous missed-pong allowance: client and server share one (possibly busy) loop.
    service = await start_connect(ws_heartbeat_seconds=0.05, ws_missed_pongs=10, ws_touch_seconds=0.3)
    touches = 0
    original = service.store.connections.touch

    async def counting_touch(connection_id: str, **kwargs: object) -> None:
        nonlocal touches
        touches += 1
        await original(connection_id)

    service.store.connections.touch = counting_touch  # type: ignore[method-assign]
    try:
        ws = await open_ws(http, service, tenant=tenant)  # autoping: answers every ping
        [cid] = list(service.connections)
        first = await store.connections.get(cid)
        assert first is not None
        conn = service.connections[cid]
        pongs = 0
        original_alive = ClientConnection.alive

        def counting_alive(self: ClientConnection) -> None:
            nonlocal pongs
            if self is conn:
                pongs += 1
            original_alive(self)

        monkeypatch.setattr(ClientConnection, "alive", counting_alive)  # slots: patch the class

        async def refreshed() -> bool:
            record = await store.connections.get(cid)
            return record is not None and record.last_seen > first.last_seen and pongs >= 15

        # Receiving is what makes the client answer pings.
        receiver = asyncio.create_task(ws.receive())
        await eventually(refreshed, what="last_seen refreshed while pongs keep coming")
        assert not ws.closed
        assert cid in service.connections
        assert 1 <= touches < pongs / 2, (touches, pongs)
        receiver.cancel()
        await ws.close()
    finally:
        service.store.connections.touch = original  # type: ignore[method-assign]
