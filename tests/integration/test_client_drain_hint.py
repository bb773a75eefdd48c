"""The Python client honours a draining gateway's reconnect hint and moves to another gateway.

Two small real WebSocket servers (aiohttp): A closes every socket at once with 1001 and
``reconnect_after_ms=1200`` (what a draining connect sends); B accepts. The client, given both
URLs, waits the hinted moment and comes back on B. Without a hint it comes back at its own
first backoff step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import WSCloseCode, web

from streamer import protocol
from streamer.client import StreamerClient


class Gateway:
    def __init__(self, *, close_with: str | None) -> None:
        self.close_with = close_with
        self.accepted: list[float] = []
        self.reached = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.accepted.append(time.monotonic())
        self.reached.set()
        if self.close_with is not None:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=self.close_with.encode())
            return ws
        async for _ in ws:
            pass
        return ws

    async def start(self) -> Gateway:
        app = web.Application()
        app.router.add_get("/ws", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def good() -> AsyncIterator[Gateway]:
    gateway = await Gateway(close_with=None).start()
    yield gateway
    await gateway.stop()


async def _reconnect_delay(draining: Gateway, good: Gateway) -> float:
    client = StreamerClient([draining.url, good.url], heartbeat=None, reconnect_delay=0.1)
    try:
        await client.connect()
        await asyncio.wait_for(good.reached.wait(), timeout=20)
        await asyncio.sleep(0.3)  # the client's side of the handshake completes
        assert client.url == good.url and client.reconnects == 1 and client.reconnect_failures == 0
        return good.accepted[0] - draining.accepted[0]
    finally:
        await client.close()


async def test_the_client_waits_the_hinted_moment_then_uses_another_gateway(good: Gateway) -> None:
    reason = protocol.drain_close_reason("server shutting down", reconnect_after=1.2)
    draining = await Gateway(close_with=reason).start()
    try:
        waited = await _reconnect_delay(draining, good)
    finally:
        await draining.stop()
    assert waited >= 1.2


async def test_without_a_hint_it_uses_its_own_backoff(good: Gateway) -> None:
    draining = await Gateway(close_with="server shutting down").start()
    try:
        waited = await _reconnect_delay(draining, good)
    finally:
        await draining.stop()
    assert waited < 1.2
