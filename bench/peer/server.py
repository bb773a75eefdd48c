"""The peer's web process: python-socketio on aiohttp + uvloop, enqueuing Celery tasks.

A client emits ``job`` ``{"request_id", "message"}``; the server enqueues the task on
the Redis broker, answers ``acknowledgment``, and relays the worker's ``progress`` and
``complete`` events (which arrive through ``AsyncRedisManager``'s pub/sub).

``python -m bench.peer.server`` (``BENCH_REDIS_URL``) prints ``{"event":"ready","port":N}``.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import socketio
from aiohttp import web

from bench.child import emit, next_command, run_child, stdin_lines
from bench.peer.tasks import REDIS_URL, echo_async


def build_app() -> web.Application:
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(REDIS_URL), cors_allowed_origins=[]
    )

    @sio.on("job")  # type: ignore[misc]
    async def job(sid: str, data: dict[str, Any]) -> None:
        request_id = str(data.get("request_id"))
        echo_async.apply_async(args=(sid, request_id, str(data.get("message", ""))))
        await sio.emit(
            "acknowledgment",
            {"request_id": request_id, "status": "queued", "message": "Request queued for processing"},
            to=sid,
        )

    app = web.Application()
    sio.attach(app)
    return app


async def main(args: argparse.Namespace) -> None:
    commands = await stdin_lines()
    runner = web.AppRunner(build_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    emit("ready", port=runner.addresses[0][1])
    try:
        while (await next_command(commands, timeout=args.max_seconds)).get("cmd") != "stop":
            pass
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()


def cli() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--max-seconds", type=float, default=900.0)
    args = p.parse_args()
    run_child(lambda: main(args), max_seconds=args.max_seconds)


if __name__ == "__main__":
    cli()
