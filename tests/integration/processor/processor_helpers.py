"""Test actions (real SDK handlers), a frame-capturing Connections server and the test
environment for the processor's integration tests (imported by name: a module called
``conftest`` would be ambiguous across test folders)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from grpc import aio

from services.processor.service import Processor
from streamer import rpc
from streamer.api.v1 import connections_pb2, connections_pb2_grpc
from streamer.config import Settings
from streamer.registry.static import StaticRegistry
from streamer.retry import Backoff
from streamer.sdk import Action, ProgressFn, Request, RetryableError
from streamer.store import ConnectionRecord, RequestRecord, Store, request_key
from streamer.store.keys import client_request_id


def key_of(request: Request) -> str:
    """The table key of a request a handler got (it sees the client's id and the tenant)."""
    return request_key(request.tenant_id, request.request_id)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Calls:
    """Invocations per request id, shared by every test action (the exactly-once evidence)."""

    def __init__(self) -> None:
        self.count: collections.Counter[str] = collections.Counter()
        self.order: list[str] = []
        self.started: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.cancelled: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)

    def hit(self, request: Request) -> int:
        key = key_of(request)  # the table key, which the tests hold as ``record.request_id``
        self.count[key] += 1
        self.order.append(key)
        self.started[key].set()
        return self.count[key]


class Fast(Action):
    """Progress 0/25/50/75/100, then echoes the payload."""

    name = "p_fast"
    mode = "async"
    timeout = 5.0

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.calls.hit(request)
        for pct in (0, 25, 50, 75, 100):
            await progress(pct, f"at {pct}")
        return {"echo": request.payload, "attempt": request.attempt}


class Chatty(Action):
    """Reports ``payload.steps`` progress events (0..100) in bursts of ``payload.burst``,
    ``payload.pause`` seconds apart (bursts keep the test's coalescing independent of load)."""

    name = "p_chatty"
    mode = "async"
    timeout = 10.0

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.calls.hit(request)
        steps = int(request.payload.get("steps", 50))
        pause = float(request.payload.get("pause", 0.005))
        burst = int(request.payload.get("burst", 1))
        for i in range(steps + 1):
            await progress(100 * i / steps, f"step {i}", {"step": i})
            if i % burst == 0:
                await asyncio.sleep(pause)
        return {"steps": steps}


class Slow(Action):
    """Sleeps ``payload.seconds`` in small steps with progress; notes a cancellation."""

    name = "p_slow"
    mode = "async"
    timeout = 30.0

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.calls.hit(request)
        seconds = float(request.payload.get("seconds", 30))
        steps = max(1, int(seconds / 0.1))
        try:
            for i in range(steps):
                await progress(100 * i / steps, "working")
                await asyncio.sleep(seconds / steps)
        except asyncio.CancelledError:
            self.calls.cancelled[key_of(request)].set()
            raise
        return {"slept": seconds}


class Flaky(Action):
    """Fails retryably for the first ``payload.failures`` attempts, then succeeds."""

    name = "p_flaky"
    mode = "async"
    timeout = 5.0
    max_attempts = 3

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        n = self.calls.hit(request)
        await progress(10 * n, f"attempt {request.attempt}")
        if n <= int(request.payload.get("failures", 1)):
            raise RetryableError(f"flaky failure {n}")
        return {"succeeded_on": request.attempt}


class Broken(Action):
    """Always fails retryably; two attempts allowed."""

    name = "p_broken"
    mode = "async"
    timeout = 5.0
    max_attempts = 2

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.calls.hit(request)
        raise RetryableError("the database is down")


class Never(Action):
    """Never ends; times out after 0.5 s, two attempts allowed."""

    name = "p_never"
    mode = "async"
    timeout = 0.5
    max_attempts = 2

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.calls.hit(request)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.calls.cancelled[key_of(request)].set()
            raise
        return None


class Huge(Action):
    """Returns ``payload.kb`` KB of text (the issue's 500 KB result); two attempts allowed."""

    name = "p_huge"
    mode = "async"
    timeout = 10.0
    max_attempts = 2

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.calls.hit(request)
        await progress(10, "building")
        return {"blob": "x" * (int(request.payload.get("kb", 500)) * 1024)}


class Quiet(Action):
    """Sleeps ``payload.seconds`` without a word (no progress writes), then answers."""

    name = "p_quiet"
    mode = "async"
    timeout = 30.0

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.calls.hit(request)
        try:
            await asyncio.sleep(float(request.payload.get("seconds", 1)))
        except asyncio.CancelledError:
            self.calls.cancelled[key_of(request)].set()
            raise
        return {"quiet": True}


class Ordered(Action):
    """Records the order it ran in; for the bulkhead/priority test (served by a concurrency-1 handler)."""

    name = "p_ordered"
    mode = "async"
    timeout = 10.0

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        self.calls.hit(request)
        await asyncio.sleep(float(request.payload.get("seconds", 0.05)))
        return {}


class Capture(connections_pb2_grpc.ConnectionsServicer):
    """A real Connections server that accepts every id and keeps the frames, per connection."""

    def __init__(self) -> None:
        self.frames: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        self.server: aio.Server | None = None
        self.address = ""

    async def Send(
        self, request: connections_pb2.SendRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendResponse:
        self.frames[request.connection_id].append(json.loads(request.frame))
        return connections_pb2.SendResponse(delivered=True)

    async def SendMany(
        self, request: connections_pb2.SendManyRequest, context: aio.ServicerContext
    ) -> connections_pb2.SendManyResponse:
        frame = json.loads(request.frame)
        for cid in request.connection_ids:
            self.frames[cid].append(frame)
        return connections_pb2.SendManyResponse(delivered=list(request.connection_ids))

    async def Disconnect(
        self, request: connections_pb2.DisconnectRequest, context: aio.ServicerContext
    ) -> connections_pb2.DisconnectResponse:
        return connections_pb2.DisconnectResponse(disconnected=True)

    async def start(self) -> str:
        server = rpc.create_server()
        connections_pb2_grpc.add_ConnectionsServicer_to_server(self, server)
        port = rpc.bind(server, host="127.0.0.1", port=0)
        await server.start()
        self.server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)

    def of(self, connection_id: str, request_id: str) -> list[dict[str, Any]]:
        """The frames a connection got about one request, in arrival order."""
        rid = client_request_id(request_id)  # frames carry the client's id; tests hold the key
        return [f for f in self.frames.get(connection_id, []) if f.get("request_id") == rid]

    def endings(self, connection_id: str, request_id: str) -> list[dict[str, Any]]:
        return [f for f in self.of(connection_id, request_id) if f["type"] in ("complete", "error")]


async def wait_until(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 15.0,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` every 20 ms until true; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


FAST_BACKOFF = Backoff(base=0.2, cap=1.0)


@dataclasses.dataclass
class ProcessorProcess:
    """``python -m services.processor`` running as its own process (see :func:`processor_process`)."""

    proc: asyncio.subprocess.Process
    #: Its JSON log lines, as they arrive.
    lines: list[dict[str, Any]]
    #: Its /metrics, /healthz, /readyz port.
    http_port: int


@contextlib.asynccontextmanager
async def processor_process(
    settings: Settings, registry_file: Any, *, worker_id: str, env: dict[str, str] | None = None
) -> AsyncIterator[ProcessorProcess]:
    """Start the processor on the test's DynamoDB and tables with a file registry, wait for
    its "processor started" line, and kill it on the way out if the test did not stop it."""
    child_env = {
        **os.environ,
        "STREAMER_DYNAMODB_ENDPOINT": settings.dynamodb_endpoint or "",
        "STREAMER_TABLE_PREFIX": settings.table_prefix,
        "STREAMER_HOST": "127.0.0.1",
        "STREAMER_LEASE_SECONDS": "2",
        "STREAMER_CLAIM_SECONDS": "2",
        "STREAMER_SWEEP_INTERVAL_SECONDS": "0.5",
        "STREAMER_DRAIN_SECONDS": "2",
        "STREAMER_WORKER_ID": worker_id,
        "STREAMER_LOG_JSON": "true",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        **(env or {}),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.processor",
        "--registry",
        str(registry_file),
        "--http-port",
        "0",
        env=child_env,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[dict[str, Any]] = []

    async def read_logs() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))

    reader = asyncio.create_task(read_logs())
    try:
        await wait_until(
            lambda: any(line.get("message") == "processor started" for line in lines),
            timeout=30,
            what="the processor to start",
        )
        port = next(line["http_port"] for line in lines if "http_port" in line)
        yield ProcessorProcess(proc=proc, lines=lines, http_port=port)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader


@dataclasses.dataclass
class Env:
    settings: Settings
    store: Store
    registry: StaticRegistry
    capture: Capture
    calls: Calls
    streams: Any
    processors: list[Processor] = dataclasses.field(default_factory=list)
    #: Closed after the test (extra stores and clients a test opens).
    exits: contextlib.AsyncExitStack = dataclasses.field(default_factory=contextlib.AsyncExitStack)

    async def processor(self, worker_id: str, **kwargs: Any) -> Processor:
        """A started processor. It shares the test's DynamoDB clients: creating aiobotocore
        clients costs ~0.5 s each here, and a shared client changes nothing the test checks."""
        kwargs.setdefault("backoff", FAST_BACKOFF)
        kwargs.setdefault("store", self.store)
        kwargs.setdefault("streams_client", self.streams)
        proc = Processor(settings=self.settings, registry=self.registry, worker_id=worker_id, **kwargs)
        self.processors.append(proc)
        await proc.start()
        return proc

    async def connection(self, connection_id: str | None = None, *, tenant_id: str = "t1") -> str:
        """A connection record whose endpoint is the capture server (the real Delivery reaches it)."""
        cid = connection_id or uid("conn")
        await self.store.connections.put(
            ConnectionRecord.new(
                connection_id=cid, user_id="u1", tenant_id=tenant_id, endpoint=self.capture.address
            )
        )
        return cid

    def new_request(
        self,
        action: str,
        payload: dict[str, Any] | None = None,
        *,
        connection_id: str,
        request_id: str | None = None,
        priority: int | None = None,
    ) -> RequestRecord:
        """A PENDING record as the router writes it (limits copied from the action's spec)."""
        spec = self.registry.lookup(action)
        assert spec is not None, action
        return RequestRecord.new(
            request_id=request_id or uid("req"),
            action=action,
            user_id="u1",
            tenant_id="t1",
            connection_id=connection_id,
            payload=payload or {},
            handler=spec.handler,
            priority=spec.priority if priority is None else priority,
            max_attempts=spec.max_attempts,
            timeout=spec.timeout,
        )

    async def submit(
        self, action: str, payload: dict[str, Any] | None = None, **kwargs: Any
    ) -> RequestRecord:
        return await self.store.requests.create(self.new_request(action, payload, **kwargs))

    async def settled(self, request_id: str, *, timeout: float = 15.0) -> RequestRecord:
        """Wait until the request is terminal; return it."""
        found: list[RequestRecord] = []

        async def done() -> bool:
            rec = await self.store.requests.get(request_id)
            if rec is not None and rec.terminal:
                found.append(rec)
                return True
            return False

        await wait_until(done, timeout=timeout, what=f"{request_id} to finish")
        return found[-1]

    async def endings(self, connection_id: str, request_id: str, *, count: int = 1) -> list[dict[str, Any]]:
        """Wait until the connection got ``count`` complete/error frames for the request; return them.

        The frame is sent after the terminal write, so a test that saw the status must
        still wait for it.
        """
        await wait_until(
            lambda: len(self.capture.endings(connection_id, request_id)) >= count,
            timeout=10.0,
            what=f"the ending frame of {request_id}",
        )
        await asyncio.sleep(0.1)  # a duplicate, if there were one, would arrive now
        return self.capture.endings(connection_id, request_id)

    async def status(self, request_id: str) -> str:
        rec = await self.store.requests.get(request_id)
        return rec.status if rec else ""


EnvFactory = Callable[..., Awaitable[Env]]
