"""Client worker processes: each holds some WebSockets and drives one kind of load.

``python -m bench.workers KIND '<json spec>'``. Every worker connects first, reports
``ready``, waits for ``go``, runs a loop bounded both in time (the spec's window) and
in count (``max_requests``), reports ``done`` with raw samples, and exits on ``stop``
or stdin EOF — or by itself after ``max_seconds``.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, the same clock in every process on
the machine), so the harness can compare a worker's receive time with its own send
time (fan-out).

Kinds:

- ``hold``: open sockets (bounded handshakes in flight), report how long it took, keep
  them; record when frames carrying ``bench_seq`` arrive (fan-out);
- ``sync``: one closed loop per socket — send, wait for the reply, repeat;
- ``async``: one closed loop per socket through ack → first progress → complete;
- ``dynamo``: raw DynamoDB conditional puts from the services' client setup;
- ``sio``: the async loop against python-socketio (the peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.child import emit, next_command, run_child, stdin_lines

Spec = dict[str, Any]


def _token(spec: Spec, index: int) -> str | None:
    if not spec.get("secret"):
        return None
    from streamer.auth import make_token

    return make_token(
        secret=spec["secret"],
        user=f"{spec.get('user_prefix', 'bench')}-{index}",
        tenant=spec.get("tenant", "bench"),
        ttl=3600,
    )


async def _open(session: aiohttp.ClientSession, spec: Spec, index: int) -> aiohttp.ClientWebSocketResponse:
    urls = spec["urls"]
    url = urls[index % len(urls)]
    token = _token(spec, spec.get("index_base", 0) + index)
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await session.ws_connect(
        url, headers=headers, autoping=True, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=2)
    )


async def _open_many(
    session: aiohttp.ClientSession, spec: Spec, count: int
) -> tuple[list[aiohttp.ClientWebSocketResponse], list[str]]:
    """Open ``count`` sockets with at most ``concurrency`` handshakes in flight.

    With ``deadline_seconds`` in the spec, no handshake starts after that many seconds
    (the ones not started count as ``skipped``, not as errors), so a slow server cannot
    stretch the run past its budget.
    """
    gate = asyncio.Semaphore(spec.get("concurrency", 100))
    errors: list[str] = []
    deadline = time.monotonic() + float(spec.get("deadline_seconds") or 1e9)
    open_timeout = float(spec.get("open_timeout", 30))

    async def one(i: int) -> aiohttp.ClientWebSocketResponse | None:
        async with gate:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                return await asyncio.wait_for(_open(session, spec, i), min(open_timeout, left + 5))
            except Exception as exc:  # every failure is counted and reported, not raised
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                else:
                    errors.append("")
                return None

    opened = await asyncio.gather(*(one(i) for i in range(count)))
    return [ws for ws in opened if ws is not None], errors


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, force_close=False),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
    )


# --------------------------------------------------------------------------- hold
async def hold(spec: Spec) -> None:
    """Open sockets on ``go``, report the time, keep them until ``stop``; record fan-out frames.

    Uses the minimal client of :mod:`bench.rawws`, so that opening 10k sockets costs
    the client processes little next to the server being measured.
    """
    from bench import rawws

    commands = await stdin_lines()
    seen: dict[int, list[float]] = {}

    def on_text(text: str) -> None:
        if "bench_seq" not in text:
            return
        now = time.monotonic()
        try:
            seq = int(json.loads(text).get("bench_seq"))
        except (ValueError, TypeError, AttributeError):
            return
        seen.setdefault(seq, []).append(now)

    gate = asyncio.Semaphore(spec.get("concurrency", 100))
    errors: list[str] = []
    open_timeout = float(spec.get("open_timeout", 30))
    urls = spec["urls"]

    async def one(i: int, deadline: float) -> rawws.RawWebSocket | None:
        async with gate:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            token = _token(spec, spec.get("index_base", 0) + i)
            headers = {"Authorization": f"Bearer {token}"} if token else None
            try:
                return await rawws.connect(
                    urls[i % len(urls)], headers=headers, on_text=on_text, timeout=min(open_timeout, left + 5)
                )
            except Exception as exc:  # every failure is counted and reported, not raised
                errors.append(f"{type(exc).__name__}: {exc}"[:200] if len(errors) < 5 else "")
                return None

    emit("ready")
    cmd = await next_command(commands, timeout=spec["max_seconds"])
    if cmd.get("cmd") != "go":
        return
    started = time.monotonic()
    budget = spec.get("deadline_seconds")
    deadline = started + (float(budget) if budget is not None else 1e9)
    opened = await asyncio.gather(*(one(i, deadline) for i in range(spec["count"])))
    sockets = [ws for ws in opened if ws is not None]
    emit(
        "opened",
        ok=len(sockets),
        failed=len(errors),
        skipped=spec["count"] - len(sockets) - len(errors),
        seconds=time.monotonic() - started,
        errors=[e for e in errors if e][:5],
    )
    while True:
        cmd = await next_command(commands, timeout=spec["max_seconds"])
        if cmd.get("cmd") != "report":
            break
        emit(
            "report",
            seqs={str(k): [len(v), max(v), min(v)] for k, v in seen.items()},
            alive=sum(1 for ws in sockets if not ws.closed),
        )
    for ws in sockets:
        ws.close()
    emit("closed")


# --------------------------------------------------------------------------- load loops
class Window:
    """The measured window: requests sent inside it count; the loop ends at its end."""

    def __init__(self, *, warmup: float, duration: float) -> None:
        now = time.monotonic()
        self.start = now + warmup
        self.end = self.start + duration

    def inside(self, t: float) -> bool:
        return self.start <= t < self.end

    def over(self) -> bool:
        return time.monotonic() >= self.end


async def _recv_json(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> dict[str, Any] | None:
    msg = await ws.receive(timeout=timeout)
    if msg.type != aiohttp.WSMsgType.TEXT:
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            raise ConnectionError(f"socket closed: {msg.type.name} {msg.extra or ''}")
        return None
    value = json.loads(msg.data)
    return value if isinstance(value, dict) else None


async def _loop_all(
    spec: Spec,
    body: Callable[[aiohttp.ClientWebSocketResponse, int, Window, dict[str, Any]], Awaitable[None]],
) -> None:
    """Connect, report ready, run ``body`` per socket inside the window on ``go``, report."""
    commands = await stdin_lines()
    async with _session() as session:
        sockets, errors = await _open_many(session, spec, spec["count"])
        if len(sockets) < spec["count"]:
            emit("error", message=f"opened {len(sockets)}/{spec['count']}: {[e for e in errors if e][:3]}")
            return
        emit("ready")
        cmd = await next_command(commands, timeout=spec["max_seconds"])
        if cmd.get("cmd") != "go":
            return
        window = Window(warmup=spec["warmup"], duration=spec["duration"])
        out: dict[str, Any] = {"errors": 0, "error_samples": [], "completed": 0}
        await asyncio.gather(*(body(ws, i, window, out) for i, ws in enumerate(sockets)))
        emit("done", **out)
        await next_command(commands, timeout=spec["max_seconds"])
        for ws in sockets:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1)


def _error(out: dict[str, Any], text: str) -> None:
    out["errors"] += 1
    if len(out["error_samples"]) < 5:
        out["error_samples"].append(text[:300])


async def sync(spec: Spec) -> None:
    """Closed loop of sync requests; the reply to our id (or, bare chain, our frame back)."""
    tag = spec.get("tag") or uuid.uuid4().hex[:8]
    max_requests = spec.get("max_requests", 1_000_000)
    timeout = spec.get("reply_timeout", 10.0)
    counter = itertools.count()

    async def body(ws: aiohttp.ClientWebSocketResponse, i: int, window: Window, out: dict[str, Any]) -> None:
        lat = out.setdefault("latencies", [])
        while not window.over() and next(counter) < max_requests:
            rid = f"{tag}-{i}-{uuid.uuid4().hex[:12]}"
            frame = json.dumps({"action": spec["action"], "id": rid, "payload": {"message": "hello"}})
            sent = time.monotonic()
            try:
                await ws.send_str(frame)
                while True:
                    reply = await _recv_json(ws, timeout)
                    if reply is None:
                        continue
                    if reply.get("id") == rid:  # the bare chain sends our frame back
                        break
                    if reply.get("request_id") == rid:
                        if reply.get("type") != "response":
                            _error(out, json.dumps(reply))
                        break
            except Exception as exc:
                _error(out, f"{type(exc).__name__}: {exc}")
                if ws.closed:
                    return
                continue
            done = time.monotonic()
            if window.inside(sent):
                lat.append((done - sent) * 1000)
            if window.inside(done):
                out["completed"] += 1

    await _loop_all(spec, body)


async def async_jobs(spec: Spec) -> None:
    """Closed loop of async requests: send → acknowledgment → first progress → complete."""
    tag = spec.get("tag") or uuid.uuid4().hex[:8]
    max_requests = spec.get("max_requests", 1_000_000)
    timeout = spec.get("reply_timeout", 30.0)
    counter = itertools.count()

    async def body(ws: aiohttp.ClientWebSocketResponse, i: int, window: Window, out: dict[str, Any]) -> None:
        acks, firsts, completes = (out.setdefault(k, []) for k in ("ack", "first", "complete"))
        while not window.over() and next(counter) < max_requests:
            rid = f"{tag}-{i}-{uuid.uuid4().hex[:12]}"
            frame = json.dumps({"action": spec["action"], "id": rid, "payload": {"message": "hello"}})
            sent = time.monotonic()
            t_ack = t_first = t_done = None
            try:
                await ws.send_str(frame)
                while t_done is None:
                    reply = await _recv_json(ws, timeout)
                    if reply is None or reply.get("request_id") != rid:
                        continue
                    kind = reply.get("type")
                    now = time.monotonic()
                    if kind == "acknowledgment" and t_ack is None:
                        t_ack = now
                    elif kind == "progress" and t_first is None:
                        t_first = now
                    elif kind == "complete":
                        t_done = now
                    elif kind in ("error", "response"):
                        _error(out, json.dumps(reply))
                        break
            except Exception as exc:
                _error(out, f"{type(exc).__name__}: {exc}")
                if ws.closed:
                    return
                continue
            if t_done is None:
                continue
            if window.inside(sent):
                if t_ack is not None:
                    acks.append((t_ack - sent) * 1000)
                if t_first is not None:
                    firsts.append((t_first - sent) * 1000)
                completes.append((t_done - sent) * 1000)
            if window.inside(t_done):
                out["completed"] += 1

    await _loop_all(spec, body)


# --------------------------------------------------------------------------- dynamo
def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def dynamo(spec: Spec) -> None:
    """Raw conditional puts (attribute_not_exists): completed/s and this process's CPU per call.

    ``client``: ``aiobotocore`` (``streamer.store.dynamo.open_client``), ``lean`` (our
    own, ``streamer.store.lean``) or ``aiodynamo`` (the library candidate, over one
    aiohttp session). All send the same item with the same condition, ``concurrency``
    at a time.
    """
    commands = await stdin_lines()
    table = spec["table"]
    async with contextlib.AsyncExitStack() as stack:
        put = await _put_function(spec.get("client", "aiobotocore"), spec["endpoint"], table, stack)
        await put("warm-" + uuid.uuid4().hex)  # the first timed call does not pay for the connection
        emit("ready")
        if (await next_command(commands, timeout=spec["max_seconds"])).get("cmd") != "go":
            return
        window = Window(warmup=spec.get("warmup", 0.3), duration=spec["duration"])
        out: dict[str, Any] = {"completed": 0, "errors": 0, "error_samples": [], "calls": 0}
        cpu: list[float] = []

        async def writer() -> None:
            while not window.over():
                if window.inside(time.monotonic()) and not cpu:
                    cpu.append(_cpu_seconds())
                    out["calls"] = 0
                sent = time.monotonic()
                try:
                    await put(uuid.uuid4().hex)
                except Exception as exc:
                    _error(out, f"{type(exc).__name__}: {exc}")
                    continue
                out["calls"] += 1
                if window.inside(sent):
                    out["completed"] += 1

        await asyncio.gather(*(writer() for _ in range(spec.get("concurrency", 32))))
        if cpu and out["calls"]:
            out["cpu_ms_per_call"] = (_cpu_seconds() - cpu[0]) * 1000 / out["calls"]
        emit("done", **out)
        await next_command(commands, timeout=spec["max_seconds"])


async def _put_function(
    client: str, endpoint: str, table: str, stack: contextlib.AsyncExitStack
) -> Callable[[str], Awaitable[Any]]:
    """A conditional put of one request-shaped item with ``client``; creates the table."""
    from streamer.config import load_settings
    from streamer.store.dynamo import open_client

    settings = load_settings({}, dynamodb_endpoint=endpoint)
    boto = await stack.enter_async_context(open_client("dynamodb", settings=settings))
    with contextlib.suppress(Exception):
        await boto.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    if client in ("aiobotocore", "lean"):
        target = boto
        if client == "lean":
            import dataclasses

            from streamer.store.lean import open_data_client

            lean_settings = dataclasses.replace(settings, dynamodb_client="lean")
            target = await stack.enter_async_context(open_data_client(settings=lean_settings))

        async def put(rid: str) -> Any:
            return await target.put_item(
                TableName=table,
                Item={
                    "request_id": {"S": rid},
                    "status": {"S": "PENDING"},
                    "created_at": {"N": repr(time.time())},
                    "payload": {"S": '{"message":"hello"}'},
                },
                ConditionExpression="attribute_not_exists(request_id)",
            )

        return put
    if client != "aiodynamo":
        raise ValueError(f"unknown DynamoDB client {client!r}")
    import yarl
    from aiodynamo.client import Client
    from aiodynamo.credentials import Key, StaticCredentials
    from aiodynamo.expressions import F
    from aiodynamo.http.aiohttp import AIOHTTP

    session = await stack.enter_async_context(aiohttp.ClientSession())
    lean = Client(
        AIOHTTP(session),
        StaticCredentials(
            Key(
                os.environ.get("AWS_ACCESS_KEY_ID", "local"), os.environ.get("AWS_SECRET_ACCESS_KEY", "local")
            )
        ),
        settings.aws_region,
        endpoint=yarl.URL(endpoint),
    )
    condition = F("request_id").does_not_exist()

    async def put_lean(rid: str) -> Any:
        item = {
            "request_id": rid,
            "status": "PENDING",
            "created_at": time.time(),
            "payload": '{"message":"hello"}',
        }
        return await lean.put_item(table, item, condition=condition)

    return put_lean


# --------------------------------------------------------------------------- socket.io peer
async def sio(spec: Spec) -> None:
    """The async closed loop against the python-socketio + Celery peer."""
    import socketio

    commands = await stdin_lines()
    timeout = spec.get("reply_timeout", 30.0)
    tag = spec.get("tag") or uuid.uuid4().hex[:8]
    max_requests = spec.get("max_requests", 1_000_000)
    counter = itertools.count()
    clients: list[Any] = []
    waiters: dict[str, asyncio.Queue[tuple[str, float]]] = {}

    def on(kind: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def handler(data: dict[str, Any]) -> None:
            queue = waiters.get(str(data.get("request_id")))
            if queue is not None:
                queue.put_nowait((kind, time.monotonic()))

        return handler

    for _ in range(spec["count"]):
        client = socketio.AsyncClient(reconnection=False)
        for kind in ("acknowledgment", "progress", "complete", "error"):
            client.on(kind, on(kind))
        await client.connect(spec["url"], transports=["websocket"], wait_timeout=10)
        clients.append(client)
    emit("ready")
    if (await next_command(commands, timeout=spec["max_seconds"])).get("cmd") != "go":
        return
    window = Window(warmup=spec["warmup"], duration=spec["duration"])
    out: dict[str, Any] = {
        "errors": 0,
        "error_samples": [],
        "completed": 0,
        "ack": [],
        "first": [],
        "complete": [],
    }

    async def body(client: Any, i: int) -> None:
        while not window.over() and next(counter) < max_requests:
            rid = f"{tag}-{i}-{uuid.uuid4().hex[:12]}"
            queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
            waiters[rid] = queue
            sent = time.monotonic()
            t_ack = t_first = t_done = None
            try:
                await client.emit("job", {"request_id": rid, "message": "hello"})
                while t_done is None:
                    kind, at = await asyncio.wait_for(queue.get(), timeout)
                    if kind == "acknowledgment" and t_ack is None:
                        t_ack = at
                    elif kind == "progress" and t_first is None:
                        t_first = at
                    elif kind == "complete":
                        t_done = at
                    elif kind == "error":
                        _error(out, "error event")
                        break
            except Exception as exc:
                _error(out, f"{type(exc).__name__}: {exc}")
                continue
            finally:
                waiters.pop(rid, None)
            if t_done is None:
                continue
            if window.inside(sent):
                if t_ack is not None:
                    out["ack"].append((t_ack - sent) * 1000)
                if t_first is not None:
                    out["first"].append((t_first - sent) * 1000)
                out["complete"].append((t_done - sent) * 1000)
            if window.inside(t_done):
                out["completed"] += 1

    await asyncio.gather(*(body(c, i) for i, c in enumerate(clients)))
    emit("done", **out)
    await next_command(commands, timeout=spec["max_seconds"])
    for client in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 1)


KINDS: dict[str, Callable[[Spec], Awaitable[None]]] = {
    "hold": hold,
    "sync": sync,
    "async": async_jobs,
    "dynamo": dynamo,
    "sio": sio,
}


def cli() -> None:
    kind, raw = sys.argv[1], sys.argv[2]
    spec: Spec = json.loads(raw)
    spec.setdefault("max_seconds", 300.0)
    run_child(lambda: KINDS[kind](spec), max_seconds=spec["max_seconds"])


if __name__ == "__main__":
    cli()
