"""The connect service end to end: records, the message flow, malformed frames, the router.

Real service in-process on 127.0.0.1 (free ports), real DynamoDB Local, real WebSocket
clients (aiohttp), and a small in-test Router gRPC servicer.
"""

from __future__ import annotations

import aiohttp
from connect_helpers import (
    FakeRouter,
    StartConnect,
    eventually,
    open_ws,
    receive_close,
    receive_json,
    sample,
    token,
)
from metricslib import scrape

from services.connect.limits import MAX_IN_FLIGHT
from services.connect.service import ConnectService
from streamer import protocol
from streamer.local.ports import free_port
from streamer.store import Store


async def test_connect_writes_the_record_and_disconnect_removes_it(
    tenant: str, connect: ConnectService, store: Store, http: aiohttp.ClientSession
) -> None:
    active_before = sample("streamer_connect_active_connections")
    client_closes = sample("streamer_connect_disconnects_total", reason="client")
    ws = await http.ws_connect(
        f"http://127.0.0.1:{connect.ws_port}/ws",
        headers={"Authorization": f"Bearer {_token(tenant)}", "User-Agent": "tests/1.0"},
    )
    records = await store.connections.by_user("alice", tenant_id=tenant)
    assert len(records) == 1
    record = records[0]
    assert record.endpoint == connect.endpoint
    assert record.endpoint == f"127.0.0.1:{connect.grpc_port}"
    assert record.metadata["user_agent"] == "tests/1.0"
    assert record.metadata["source_ip"] == "127.0.0.1"
    assert record.metadata["permissions"] == ["reports:read"]
    assert record.connection_id in connect.connections
    assert sample("streamer_connect_active_connections") == active_before + 1
    await store.subscriptions.subscribe(
        request_id="r-1", connection_id=record.connection_id, user_id="alice", tenant_id=tenant
    )

    await ws.close()

    async def gone() -> bool:
        return await store.connections.get(record.connection_id) is None

    await eventually(gone, what="record deleted after a clean close")
    assert await store.subscriptions.for_connection(record.connection_id) == []
    await eventually(
        (lambda: sample("streamer_connect_disconnects_total", reason="client") == client_closes + 1),
        what="disconnect counted",
    )
    assert sample("streamer_connect_active_connections") == active_before


async def test_abrupt_disconnect_removes_the_record(
    tenant: str, connect: ConnectService, store: Store, http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, connect, user="bob", tenant=tenant)
    [record] = await store.connections.by_user("bob", tenant_id=tenant)
    # Drop the TCP connection without a close frame.
    transport = ws._response.connection.transport  # type: ignore[union-attr]
    assert transport is not None
    transport.abort()

    async def gone() -> bool:
        return await store.connections.get(record.connection_id) is None

    await eventually(gone, what="record deleted after an abrupt disconnect")
    assert record.connection_id not in connect.connections


async def test_ping_is_answered_locally(
    tenant: str, connect: ConnectService, router: tuple[FakeRouter, str], http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    await ws.send_json({"action": "$ping"})
    pong = await receive_json(ws)
    assert pong["type"] == "pong"
    assert "timestamp" in pong
    assert router[0].requests == []
    await ws.close()


async def test_messages_are_routed_with_principal_and_ids(
    tenant: str, connect: ConnectService, router: tuple[FakeRouter, str], http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, connect, user="carol", tenant=tenant)
    await ws.send_json({"action": "echo", "id": "c-17", "payload": {"message": "hi"}, "metadata": {"p": 5}})
    reply = await receive_json(ws)
    assert reply["type"] == "response"
    assert reply["request_id"] == "c-17"
    data = reply["data"]
    assert data["payload"] == {"message": "hi"}
    assert data["metadata"] == {"p": 5}
    assert data["user_id"] == "carol"
    assert data["tenant_id"] == tenant
    assert data["permissions"] == ["reports:read"]
    assert data["connection_id"] in connect.connections

    # `request_id` is accepted as an alias; without any id the server makes one.
    await ws.send_json({"action": "echo", "request_id": "alias-1"})
    assert (await receive_json(ws))["request_id"] == "alias-1"
    await ws.send_json({"action": "echo"})
    made = await receive_json(ws)
    assert made["request_id"].startswith("req-")
    assert router[0].requests[-1].request_id == made["request_id"]

    # Several frames in one RouteResponse arrive in order.
    await ws.send_json({"action": "twice", "id": "t-1"})
    assert (await receive_json(ws))["type"] == "response"
    assert (await receive_json(ws))["type"] == "status"
    await ws.close()


async def test_a_slow_request_does_not_block_the_next_message(
    tenant: str, connect: ConnectService, router: tuple[FakeRouter, str], http: aiohttp.ClientSession
) -> None:
    servicer = router[0]
    ws = await open_ws(http, connect, tenant=tenant)
    await ws.send_json({"action": "slow", "id": "slow-1"})
    await eventually((lambda: servicer.slow_started == 1), what="slow request reached the router")
    await ws.send_json({"action": "$cancel", "id": "x-1", "payload": {"request_id": "slow-1"}})
    status = await receive_json(ws)
    assert status == {
        "type": "status",
        "request_id": "slow-1",
        "status": "CANCELLED",
        "percentage": 0,
        "message": "",
    }
    servicer.release.set()
    done = await receive_json(ws)
    assert done["request_id"] == "slow-1"
    await ws.close()


async def test_in_flight_routes_are_capped(
    tenant: str, start_connect: StartConnect, router: tuple[FakeRouter, str], http: aiohttp.ClientSession
) -> None:
    service: ConnectService = await start_connect(ws_rate_limit=0.0)
    ws = await open_ws(http, service, tenant=tenant)
    for i in range(MAX_IN_FLIGHT):
        await ws.send_json({"action": "slow", "id": f"s-{i}"})
    await eventually((lambda: router[0].slow_started == MAX_IN_FLIGHT), what="all slow requests routed")
    await ws.send_json({"action": "echo", "id": "one-too-many"})
    refused = await receive_json(ws)
    assert refused["request_id"] == "one-too-many"
    assert refused["error"]["code"] == protocol.RATE_LIMITED
    assert refused["error"]["retryable"] is True
    router[0].release.set()
    seen = {(await receive_json(ws))["request_id"] for _ in range(MAX_IN_FLIGHT)}
    assert seen == {f"s-{i}" for i in range(MAX_IN_FLIGHT)}
    await ws.close()


async def test_closing_cancels_in_flight_routes(
    tenant: str, connect: ConnectService, router: tuple[FakeRouter, str], http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    await ws.send_json({"action": "slow", "id": "s-1"})
    await eventually((lambda: router[0].slow_started == 1), what="slow request routed")
    await ws.close()
    await eventually((lambda: router[0].slow_cancelled == 1), what="Route call cancelled")


async def test_malformed_frames_get_errors_and_the_connection_survives(
    tenant: str, connect: ConnectService, router: tuple[FakeRouter, str], http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    cases: list[tuple[str | bytes, str]] = [
        ("not json", protocol.VALIDATION_ERROR),
        ("[1, 2]", protocol.VALIDATION_ERROR),
        ('{"payload": {}}', protocol.VALIDATION_ERROR),
        ('{"action": "bad action!"}', protocol.VALIDATION_ERROR),
        ('{"action": "$explode"}', protocol.INVALID_ACTION),
        ('{"action": "echo", "payload": [1]}', protocol.VALIDATION_ERROR),
        ('{"action": "$cancel", "id": "k-1"}', protocol.VALIDATION_ERROR),
        (b"\xff\xfe not utf-8", protocol.VALIDATION_ERROR),
    ]
    for frame, code in cases:
        before = sample("streamer_connect_rejected_frames_total", code=code)
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        error = await receive_json(ws)
        assert error["type"] == "error", frame
        assert error["error"]["code"] == code, frame
        assert sample("streamer_connect_rejected_frames_total", code=code) == before + 1
    # The id of an invalid frame is echoed when it could be read.
    await ws.send_str('{"action": "$cancel", "id": "k-2"}')
    assert (await receive_json(ws))["request_id"] == "k-2"
    # Still open and working.
    await ws.send_json({"action": "echo", "id": "after"})
    assert (await receive_json(ws))["request_id"] == "after"
    assert not ws.closed
    assert len(router[0].requests) == 1
    await ws.close()


async def test_router_down_answers_service_unavailable_and_keeps_the_socket(
    tenant: str, start_connect: StartConnect, http: aiohttp.ClientSession
) -> None:
    service: ConnectService = await start_connect(router_address=f"127.0.0.1:{free_port()}")
    ws = await open_ws(http, service, tenant=tenant)
    await ws.send_json({"action": "echo", "id": "e-1"})
    error = await receive_json(ws)
    assert error == {
        "type": "error",
        "request_id": "e-1",
        "error": {
            "code": protocol.SERVICE_UNAVAILABLE,
            "message": "The service is temporarily unavailable; try again",
            "retryable": True,
        },
    }
    await ws.send_json({"action": "$ping"})
    assert (await receive_json(ws))["type"] == "pong"
    await ws.close()


async def test_router_too_slow_answers_service_unavailable(
    tenant: str, start_connect: StartConnect, router: tuple[FakeRouter, str], http: aiohttp.ClientSession
) -> None:
    service: ConnectService = await start_connect(ws_route_timeout_seconds=0.2)
    ws = await open_ws(http, service, tenant=tenant)
    await ws.send_json({"action": "slow", "id": "late-1"})
    error = await receive_json(ws)
    assert error["request_id"] == "late-1"
    assert error["error"]["code"] == protocol.SERVICE_UNAVAILABLE
    assert error["error"]["retryable"] is True
    assert not ws.closed
    await ws.close()


async def test_probes_on_both_ports_metrics_only_on_the_internal_one(
    tenant: str, connect: ConnectService, http: aiohttp.ClientSession
) -> None:
    assert connect.http_port != connect.ws_port
    for port in (connect.ws_port, connect.http_port):
        async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert resp.status == 200, await resp.text()
    metrics = await scrape(connect.http_port, session=http)
    assert "streamer_connect_active_connections" in metrics
    assert "streamer_connect_connections_total" in metrics
    async with http.get(f"http://127.0.0.1:{connect.ws_port}/metrics") as resp:
        assert resp.status == 404  # the public port does not expose metrics


async def test_drain_closes_with_1001_and_removes_records(
    tenant: str, connect: ConnectService, store: Store, http: aiohttp.ClientSession
) -> None:
    clients = [await open_ws(http, connect, user=f"u{i}", tenant=tenant) for i in range(3)]
    ids = list(connect.connections)
    assert len(ids) == 3
    await connect.drain(timeout=4.0)
    for ws in clients:
        code, reason = await receive_close(ws)
        assert code == protocol.CLOSE_GOING_AWAY and reason.startswith("server shutting down")
        assert protocol.reconnect_hint(reason) is not None  # when to come back (spread over the drain)
    for cid in ids:
        assert await store.connections.get(cid) is None
    async with http.get(f"http://127.0.0.1:{connect.http_port}/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["reason"] == "draining"
    assert connect.connections == {}


async def test_draining_refuses_new_upgrades(
    tenant: str, connect: ConnectService, http: aiohttp.ClientSession
) -> None:
    # Refuse at the handler level (the listening socket closes too; this covers the
    # window between the drain starting and the socket closing).
    connect.draining = True
    async with http.get(
        f"http://127.0.0.1:{connect.ws_port}/ws", headers={"Authorization": f"Bearer {_token(tenant)}"}
    ) as resp:
        assert resp.status == 503
        assert (await resp.json())["code"] == protocol.SERVICE_UNAVAILABLE
    connect.draining = False


def _token(tenant: str) -> str:
    return token("alice", tenant, permissions=["reports:read"])


async def test_a_frame_goes_straight_to_the_socket_unless_one_is_being_written(
    connect: ConnectService, tenant: str, http: aiohttp.ClientSession
) -> None:
    ws = await open_ws(http, connect, tenant=tenant)
    [conn] = list(connect.connections.values())
    assert conn.send_text('{"type":"x","n":1}')
    assert conn.queued_frames == 0, "written to the transport at once, not handed to the writer task"
    conn._writing = True  # the writer task is in the middle of an earlier frame: queue, keep order
    assert conn.send_text('{"type":"x","n":2}')
    assert conn.queued_frames == 1
    conn._writing = False
    assert await receive_json(ws) == {"type": "x", "n": 1}
    assert await receive_json(ws) == {"type": "x", "n": 2}
    # The writer task existed only while a frame waited.
    await eventually(lambda: conn._writer is None or conn._writer.done(), what="the writer task ended")
    assert conn.send_text('{"type":"x","n":3}') and conn.queued_frames == 0  # direct again
    assert await receive_json(ws) == {"type": "x", "n": 3}
    await ws.close()
