"""Helpers for the connect tests (imported by conftest.py and the test modules).

The Router here is a stand-in until services/router exists: it answers ``echo`` with a
``response`` frame that repeats what it was given (so tests can check the principal
and ids connect sent), holds ``slow`` until released or cancelled, and answers
``$cancel`` with a ``status`` frame.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import prometheus_client
from grpc import aio

from services.connect.service import ConnectService
from streamer import protocol, rpc
from streamer.api.v1 import router_pb2, router_pb2_grpc
from streamer.auth import make_token
from streamer.config import Settings

SECRET = "connect-tests-secret-that-is-long-enough-0123456789"
REPO = pathlib.Path(__file__).resolve().parents[3]


class FakeRouter(router_pb2_grpc.RouterServicer):
    """Records every RouteRequest; see the module docstring for the actions."""

    def __init__(self) -> None:
        self.requests: list[router_pb2.RouteRequest] = []
        self.release = asyncio.Event()
        self.slow_started = 0
        self.slow_cancelled = 0

    async def Route(
        self, request: router_pb2.RouteRequest, context: aio.ServicerContext
    ) -> router_pb2.RouteResponse:
        self.requests.append(request)
        if request.action == "slow":
            self.slow_started += 1
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.slow_cancelled += 1
                raise
        if request.action == protocol.CANCEL:
            target = rpc.loads(request.payload)["request_id"]
            frame = protocol.status_message(target, status="CANCELLED")
            return router_pb2.RouteResponse(frames=[rpc.dumps(frame)])
        data = {
            "action": request.action,
            "payload": rpc.loads(request.payload, default={}),
            "metadata": rpc.loads(request.metadata, default={}),
            "connection_id": request.connection_id,
            "user_id": request.principal.user_id,
            "tenant_id": request.principal.tenant_id,
            "permissions": list(request.principal.permissions),
        }
        frames = [rpc.dumps(protocol.response_message(request.request_id, data))]
        if request.action == "twice":
            frames.append(rpc.dumps(protocol.status_message(request.request_id, status="COMPLETED")))
        return router_pb2.RouteResponse(frames=frames)

    async def Publish(
        self, request: router_pb2.PublishRequest, context: aio.ServicerContext
    ) -> router_pb2.PublishResponse:
        return router_pb2.PublishResponse()


def token(user: str = "alice", tenant: str = "acme", **kwargs: Any) -> str:
    return make_token(secret=SECRET, user=user, tenant=tenant, **kwargs)


def ws_url(service: ConnectService | int, query: str = "") -> str:
    port = service if isinstance(service, int) else service.ws_port
    return f"http://127.0.0.1:{port}/ws" + (f"?{query}" if query else "")


async def open_ws(
    http: aiohttp.ClientSession,
    service: ConnectService | int,
    *,
    tenant: str,
    user: str = "alice",
    **kwargs: Any,
) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket authenticated with an Authorization header."""
    headers = {"Authorization": f"Bearer {token(user, tenant, permissions=['reports:read'])}"}
    return await http.ws_connect(ws_url(service), headers=headers, **kwargs)


async def receive_json(ws: aiohttp.ClientWebSocketResponse, *, timeout: float = 5.0) -> dict[str, Any]:
    """The next data frame as JSON (pings are skipped; a close fails the test)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data)  # type: ignore[no-any-return]
        if msg.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
            continue
        raise AssertionError(f"expected a frame, got {msg.type.name} {msg.data!r} {msg.extra!r}")


async def receive_close(
    ws: aiohttp.ClientWebSocketResponse, *, timeout: float = 5.0
) -> tuple[int | None, str]:
    """Read until the close frame; (code, reason)."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.CLOSE:
            return msg.data, msg.extra or ""
        if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            return ws.close_code, ""


async def eventually(check: Callable[[], Any], *, timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` (sync or async) until it is true (no fixed sleeps in assertions)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s: {what}")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- as a process


class ConnectProcess:
    """``python -m services.connect`` with STREAMER_* settings; stderr goes to a file."""

    def __init__(self, env: dict[str, str], log_path: pathlib.Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    async def start(self, *, timeout: float = 30.0) -> ConnectProcess:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - spawning does not block
                [sys.executable, "-m", "services.connect"],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            for entry in self.log_entries():
                if entry.get("message") == "connect ready":
                    self.ready = entry
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"connect exited with {self.proc.returncode}: {self.log_path.read_text()}"
                )
            await asyncio.sleep(0.05)
        raise AssertionError(f"connect not ready in {timeout}s: {self.log_path.read_text()}")

    def log_entries(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries

    @property
    def ws_port(self) -> int:
        return int(self.ready["ws_port"])

    @property
    def endpoint(self) -> str:
        return str(self.ready["endpoint"])

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, *, timeout: float = 30.0) -> int:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None:
            if loop.time() > deadline:
                raise AssertionError("connect did not exit in time")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    env.update(
        {
            "STREAMER_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
            "STREAMER_TABLE_PREFIX": settings.table_prefix,
            "STREAMER_JWT_SECRET": SECRET,
            "STREAMER_HOST": "127.0.0.1",
            "STREAMER_WS_PORT": "0",
            "STREAMER_GRPC_PORT": "0",
            "STREAMER_HTTP_PORT": "0",
            "STREAMER_ROUTER_ADDRESS": settings.router_address,
            "STREAMER_LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


StartConnect = Callable[..., Awaitable[ConnectService]]


def sample(name: str, **labels: str) -> float:
    """The current value of one metric sample (0 when it was never set)."""
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0
