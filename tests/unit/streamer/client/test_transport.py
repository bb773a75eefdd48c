"""The client's transport on its own (no requests): over a small real aiohttp WebSocket server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from streamer import protocol
from streamer.client import ConnectionClosedError, ServiceUnavailableError, StreamerError
from streamer.client.transport import Transport


class Server:
    """Answers every text frame with ``{"echo": frame}`` and first sends a non-JSON frame."""

    def __init__(self) -> None:
        self.sockets: list[web.WebSocketResponse] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.append(ws)
        await ws.send_str("not json")
        await ws.send_str("[1, 2]")
        async for msg in ws:
            await ws.send_str(json.dumps({"echo": json.loads(msg.data)}))
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/ws"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    await srv.start()
    yield srv
    assert srv.runner is not None
    await srv.runner.cleanup()


class Owner:
    """What StreamerClient gives a transport: three callbacks."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reconnected = 0
        self.failed: list[StreamerError] = []

    async def on_reconnected(self) -> None:
        self.reconnected += 1

    def transport(self, url: str, **kw: Any) -> Transport:
        return Transport(
            [url],
            on_message=self.messages.put_nowait,
            on_reconnected=self.on_reconnected,
            on_failed=self.failed.append,
            heartbeat=None,
            reconnect_delay=0.01,
            **kw,
        )


async def test_frames_go_out_and_json_objects_come_back_through_a_reconnect(server: Server) -> None:
    owner = Owner()
    transport = owner.transport(server.url)
    await transport.connect()
    try:
        await transport.send({"n": 1})
        # The non-JSON frame and the JSON array are not handed over.
        assert await asyncio.wait_for(owner.messages.get(), 10) == {"echo": {"n": 1}}
        await transport.drop_connection()
        await transport.send({"n": 2})  # waits for the reconnect
        assert await asyncio.wait_for(owner.messages.get(), 10) == {"echo": {"n": 2}}
        assert transport.reconnects == 1 and owner.reconnected == 1
        assert transport.connected and owner.failed == []
    finally:
        await transport.close()
        await transport.release()


async def test_a_close_meant_by_the_server_fails_once_and_sends_raise(server: Server) -> None:
    owner = Owner()
    transport = owner.transport(server.url)
    await transport.connect()
    try:
        await asyncio.sleep(0.1)
        await server.sockets[0].close(code=protocol.CLOSE_DISCONNECTED, message=b"bye")
        for _ in range(100):
            if owner.failed:
                break
            await asyncio.sleep(0.05)
        assert len(owner.failed) == 1 and isinstance(owner.failed[0], ConnectionClosedError)
        assert transport.last_close_code == protocol.CLOSE_DISCONNECTED and transport.reconnects == 0
        with pytest.raises(ConnectionClosedError):
            await transport.send({"n": 3})
    finally:
        await transport.close()
        await transport.release()


async def test_a_gateway_that_never_answers_the_upgrade_fails_within_connect_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = Owner().transport(f"ws://127.0.0.1:{port}/ws", connect_timeout=0.5)
    try:
        with pytest.raises(ServiceUnavailableError, match=r"no answer within 0\.5s"):
            await asyncio.wait_for(transport.connect(), timeout=30)
        assert held  # it did reach the server
    finally:
        await transport.release()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
