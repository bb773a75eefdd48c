"""The bare WebSocket server: aiohttp on uvloop, nothing else.

It is the floor for three scenarios:

- held connections (1): it accepts, keeps and ignores sockets — no auth, no store;
- fan-out (4): ``POST /broadcast`` writes the body as one text frame to every socket;
- the sync chain's front (2): with ``--router HOST:PORT`` each text frame goes, as-is,
  through one gRPC ``Router.Route`` call and the first returned frame is written back
  (the bare router forwards it to a bare handler) — forwarding only, no parsing.

``python -m bench.servers.bare_ws [--router ADDR]`` prints ``{"event":"ready","port":N}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import weakref
from typing import Any

from aiohttp import WSMsgType, web

from bench.child import emit, next_command, run_child, stdin_lines
from streamer import rpc
from streamer.api.v1 import router_pb2, router_pb2_grpc


def build_app(*, router: str | None) -> web.Application:
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    stub: Any = router_pb2_grpc.RouterStub(rpc.channel(router)) if router else None

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.add(ws)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT or stub is None:
                continue
            reply = await stub.Route(router_pb2.RouteRequest(payload=msg.data.encode()))
            await ws.send_str(reply.frames[0].decode())
        return ws

    async def broadcast(request: web.Request) -> web.Response:
        frame = await request.text()
        sent = 0
        for ws in list(sockets):
            if ws.closed:
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(frame)
                sent += 1
        return web.json_response({"sent": sent})

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"sockets": sum(1 for ws in sockets if not ws.closed)})

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_post("/broadcast", broadcast)
    app.router.add_get("/count", count)
    return app


async def main(args: argparse.Namespace) -> None:
    commands = await stdin_lines()
    runner = web.AppRunner(build_app(router=args.router), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    emit("ready", port=port)
    try:
        while (await next_command(commands, timeout=args.max_seconds)).get("cmd") != "stop":
            pass
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner.cleanup(), 5)


def cli() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--router", default=None)
    p.add_argument("--max-seconds", type=float, default=900.0)
    args = p.parse_args()
    run_child(lambda: main(args), max_seconds=args.max_seconds)


if __name__ == "__main__":
    cli()
