"""The soak: many WebSockets held for a long time with mixed traffic; no leak, no stray error.

:func:`run_soak` starts a :class:`~streamer.local.stack.LocalStack` (one connect, one
processor, the router and the example handler) on the given DynamoDB, opens
``connections`` raw WebSockets (50 upgrades at a time), and runs one loop per socket
for ``seconds``. Every ``period`` seconds (with jitter) each loop does one of:

======================  =======  ===========================================
what                    share    expected answer
======================  =======  ===========================================
``$ping``               55 %     ``pong``
``echo`` (sync)         20 %     ``response`` with the same message
``echo_async``          8 %      ``acknowledgment``, progress, ``complete``
``$status`` (own req)   7 %      ``status`` of that request
malformed frame         5 %      ``error`` ``VALIDATION_ERROR`` (expected)
reconnect               5 %      the socket is closed and opened again
======================  =======  ===========================================

Each service's resident memory (VmRSS) and open file descriptors are read from
/proc four times: before any client (``idle``), once every socket is open and the
traffic has warmed up (``start``), when the traffic ends with every socket still open
(``end``), and a few seconds after every socket closed (``closed``). Errors are
anything but the expected answers: other error codes, answers that never came, and
sockets the server closed. The service logs are scanned for ``error`` lines too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import pathlib
import random
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp
from metricslib import scrape

from streamer.local.stack import LocalStack

SOAK_ENV: dict[str, str] = {
    "STREAMER_EXAMPLES_STEP_SECONDS": "0.05",
    "STREAMER_WS_HEARTBEAT_SECONDS": "5",
    "STREAMER_PROGRESS_INTERVAL_SECONDS": "0.05",
    "STREAMER_DRAIN_SECONDS": "3",
    "STREAMER_LOG_LEVEL": "INFO",
}
ANSWER_TIMEOUT = 30.0
#: The stated bounds: growth from ``start`` to ``end`` (every socket open both times).
RSS_GROWTH_FACTOR = 1.25
RSS_GROWTH_SLACK_KIB = 24 * 1024
FD_GROWTH_SLACK = 40
#: After every socket closed, connect's descriptors return to within this of ``idle``, plus
#: the DynamoDB client's keep-alive pool (``max_pool_connections`` in streamer/store/dynamo.py),
#: which is empty at ``idle`` and may be full afterwards.
FD_CLOSED_SLACK = 25
DYNAMODB_POOL = 64


@dataclasses.dataclass(frozen=True)
class SoakConfig:
    connections: int = 2_000
    seconds: float = 600.0
    period: float = 10.0
    warmup: float = 20.0
    tenants: int = 5
    users_per_tenant: int = 40
    seed: int = 5


@dataclasses.dataclass
class Snapshot:
    rss_kib: int
    fds: int


@dataclasses.dataclass
class SoakFigures:
    connections: int
    seconds: float
    operations: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    expected_errors: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    unexpected: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    examples: list[str] = dataclasses.field(default_factory=list)
    progress_frames: int = 0
    late_frames: int = 0
    snapshots: dict[str, dict[str, Snapshot]] = dataclasses.field(default_factory=dict)
    error_log_lines: list[str] = dataclasses.field(default_factory=list)
    active_at_end: float = -1

    def table(self) -> str:
        lines = [
            f"{self.connections} connections for {self.seconds:.0f} s: "
            f"{sum(self.operations.values())} operations ({_fmt(self.operations)}), "
            f"{self.progress_frames} progress frames; {self.late_frames} frames after their wait timed out; "
            f"expected errors {_fmt(self.expected_errors) or 'none'}; "
            f"unexpected errors {_fmt(self.unexpected) or 'none'}; "
            f"error log lines {len(self.error_log_lines)}.",
            "",
            "| service | RSS idle | RSS start | RSS end | fds idle | fds start | fds end | fds after close |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in sorted(self.snapshots.get("idle", {})):
            s = {k: v.get(name) for k, v in self.snapshots.items()}

            def mib(snap: Snapshot | None) -> str:
                return f"{snap.rss_kib / 1024:.1f} MiB" if snap else "-"

            def fds(snap: Snapshot | None) -> str:
                return str(snap.fds) if snap else "-"

            lines.append(
                f"| {name} | {mib(s.get('idle'))} | {mib(s.get('start'))} | {mib(s.get('end'))} | "
                f"{fds(s.get('idle'))} | {fds(s.get('start'))} | {fds(s.get('end'))} | "
                f"{fds(s.get('closed'))} |"
            )
        return "\n".join(lines)

    def bound_violations(self) -> list[str]:
        out: list[str] = []
        start, end = self.snapshots.get("start", {}), self.snapshots.get("end", {})
        idle, closed = self.snapshots.get("idle", {}), self.snapshots.get("closed", {})
        for name, a in start.items():
            b = end.get(name)
            if b is None:
                out.append(f"{name}: no end snapshot (process gone?)")
                continue
            limit = a.rss_kib * RSS_GROWTH_FACTOR + RSS_GROWTH_SLACK_KIB
            if b.rss_kib > limit:
                out.append(f"{name}: RSS grew {a.rss_kib} -> {b.rss_kib} KiB (bound {limit:.0f})")
            if b.fds > a.fds + FD_GROWTH_SLACK:
                out.append(f"{name}: fds grew {a.fds} -> {b.fds} (bound +{FD_GROWTH_SLACK})")
        for name, a in idle.items():
            c = closed.get(name)
            if (
                name.startswith("connect")
                and c is not None
                and c.fds > a.fds + DYNAMODB_POOL + FD_CLOSED_SLACK
            ):
                out.append(f"{name}: {c.fds} fds after every socket closed, {a.fds} before any opened")
        return out


def _fmt(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def proc_snapshot(pid: int) -> Snapshot:
    rss = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
    return Snapshot(rss_kib=rss, fds=len(os.listdir(f"/proc/{pid}/fd")))


def snapshot(stack: LocalStack) -> dict[str, Snapshot]:
    out: dict[str, Snapshot] = {}
    for name, service in stack.services.items():
        if service.pid is not None and service.running:
            out[name] = proc_snapshot(service.pid)
    return out


class _Socket:
    """One client WebSocket whose frames a reader task moves to ``inbox`` (None: closed).

    Reading all the time is what answers the server's heartbeat pings while the
    client's own loop sleeps between operations.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        #: Requests whose answer never came in time: their late frames are counted, not blamed
        #: on the next operation.
        self.abandoned: set[str] = set()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    return
                data = json.loads(msg.data)
                if data.get("type") != "ping":
                    self.inbox.put_nowait(data)
        finally:
            self.inbox.put_nowait(None)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), timeout=5)
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


class Soak:
    def __init__(self, config: SoakConfig, stack: LocalStack) -> None:
        self.config = config
        self.stack = stack
        self.rng = random.Random(config.seed)
        self.figures = SoakFigures(connections=config.connections, seconds=config.seconds)
        self.session: aiohttp.ClientSession | None = None
        self.stop = asyncio.Event()

    def _problem(self, kind: str, detail: str) -> None:
        self.figures.unexpected[kind] += 1
        if len(self.figures.examples) < 20:
            self.figures.examples.append(f"{kind}: {detail[:200]}")

    async def _open(self, token: str) -> _Socket:
        assert self.session is not None
        for attempt in range(5):
            try:
                ws = await self.session.ws_connect(
                    self.stack.ws_url, headers={"Authorization": f"Bearer {token}"}, autoping=True
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._problem("connect_failed", repr(exc))
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            return _Socket(ws)
        raise AssertionError("could not open a WebSocket five times in a row")

    async def _answer(
        self, sock: _Socket, want: Any, *, until: str, rid: str | None = None
    ) -> dict[str, Any] | None:
        """Read until a message matching ``want(msg)``; progress frames are counted on the way."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_TIMEOUT
        while True:
            left = deadline - loop.time()
            try:
                data = await asyncio.wait_for(sock.inbox.get(), timeout=max(0.0, left))
            except TimeoutError:
                self._problem("no_answer", f"waiting for {until}")
                if rid is not None:
                    sock.abandoned.add(rid)
                return None
            if data is None:
                self._problem("closed_by_server", f"code {sock.ws.close_code} waiting for {until}")
                return None
            if data.get("request_id") in sock.abandoned:
                self.figures.late_frames += 1
                continue
            if data.get("type") == "progress":
                self.figures.progress_frames += 1
                continue
            if want(data):
                return data
            if data.get("type") == "error":
                self._problem(f"error_{data['error']['code']}", json.dumps(data))
                return None
            self._problem("unexpected_frame", json.dumps(data))
            return None

    async def client_loop(self, index: int, ready: asyncio.Semaphore, opened: list[int]) -> None:
        cfg = self.config
        rng = random.Random(cfg.seed * 100_003 + index)
        tenant = f"soak-t{index % cfg.tenants}"
        user = f"soak-u{(index // cfg.tenants) % cfg.users_per_tenant}"
        token = self.stack.token(user=user, tenant=tenant)
        async with ready:
            sock = await self._open(token)
        opened[0] += 1
        last_async: str | None = None
        ops = self.figures.operations
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=rng.uniform(0, cfg.period))
            while not self.stop.is_set():
                roll = rng.random()
                if sock.ws.closed:
                    self._problem("closed_by_server", f"code {sock.ws.close_code}")
                    await sock.close()
                    sock = await self._open(token)
                if roll < 0.55:
                    ops["ping"] += 1
                    await sock.ws.send_str('{"action":"$ping"}')
                    await self._answer(sock, lambda m: m.get("type") == "pong", until="pong")
                elif roll < 0.75:
                    ops["echo"] += 1
                    rid = f"s-{uuid.uuid4().hex[:12]}"
                    payload = {"message": f"soak {index}"}
                    await sock.ws.send_str(json.dumps({"action": "echo", "id": rid, "payload": payload}))
                    await self._answer(
                        sock,
                        lambda m, rid=rid: m.get("type") == "response" and m.get("request_id") == rid,
                        until="response",
                        rid=rid,
                    )
                elif roll < 0.83:
                    ops["echo_async"] += 1
                    rid = f"a-{uuid.uuid4().hex[:12]}"
                    payload = {"message": f"soak {index}"}
                    await sock.ws.send_str(
                        json.dumps({"action": "echo_async", "id": rid, "payload": payload})
                    )
                    got = await self._answer(
                        sock,
                        lambda m, rid=rid: (
                            m.get("type") in ("acknowledgment", "complete") and m.get("request_id") == rid
                        ),
                        until="acknowledgment",
                        rid=rid,
                    )
                    if got is not None and got["type"] == "acknowledgment":
                        got = await self._answer(
                            sock,
                            lambda m, rid=rid: m.get("type") == "complete" and m.get("request_id") == rid,
                            until=f"complete of {rid}",
                            rid=rid,
                        )
                    if got is not None:
                        last_async = rid
                elif roll < 0.90 and last_async is not None:
                    ops["status"] += 1
                    frame = {"action": "$status", "payload": {"request_id": last_async}}
                    await sock.ws.send_str(json.dumps(frame))
                    await self._answer(
                        sock,
                        lambda m, rid=last_async: m.get("type") == "status" and m.get("request_id") == rid,
                        until="status",
                    )
                elif roll < 0.95:
                    ops["malformed"] += 1
                    await sock.ws.send_str(rng.choice(['{"action":', "[]", '{"action":"bad action"}', "{}"]))
                    got = await self._answer(
                        sock,
                        lambda m: m.get("type") == "error" and m["error"]["code"] == "VALIDATION_ERROR",
                        until="VALIDATION_ERROR",
                    )
                    if got is not None:
                        self.figures.expected_errors["VALIDATION_ERROR"] += 1
                else:
                    ops["reconnect"] += 1
                    await sock.close()
                    sock = await self._open(token)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), timeout=rng.uniform(0.5, 1.5) * cfg.period)
        except (aiohttp.ClientError, ConnectionError) as exc:
            self._problem("client_error", repr(exc))
        finally:
            await sock.close()

    async def active_connections(self) -> float:
        service = self.stack.service("connect")
        assert self.session is not None
        metrics = await scrape(service.http_port, session=self.session)
        active = metrics.value("streamer_connect_active_connections")
        return -1.0 if active is None else active

    async def run(self) -> SoakFigures:
        cfg = self.config
        figures = self.figures
        log_sizes = {
            name: s.log_path.stat().st_size if s.log_path and s.log_path.exists() else 0
            for name, s in self.stack.services.items()
        }
        figures.snapshots["idle"] = snapshot(self.stack)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            self.session = session
            ready = asyncio.Semaphore(50)
            opened = [0]
            tasks = [asyncio.create_task(self.client_loop(i, ready, opened)) for i in range(cfg.connections)]
            loop = asyncio.get_running_loop()
            begin = loop.time()
            while opened[0] < cfg.connections and loop.time() - begin < 300:
                await asyncio.sleep(0.2)
                if any(t.done() for t in tasks):
                    break
            await asyncio.sleep(cfg.warmup)
            figures.snapshots["start"] = snapshot(self.stack)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=max(0.0, cfg.seconds - cfg.warmup))
            figures.active_at_end = await self.active_connections()
            figures.snapshots["end"] = snapshot(self.stack)
            self.stop.set()
            done, pending = await asyncio.wait(tasks, timeout=ANSWER_TIMEOUT + 30)
            for task in pending:
                task.cancel()
                self._problem("client_stuck", "loop did not finish")
            for task in done:
                if task.exception() is not None:
                    self._problem("client_crashed", repr(task.exception()))
            # Every socket is closed on the client side; wait (bounded) until connect has let go
            # of all of them too, then give it a moment more to release what they held.
            for _ in range(300):
                if await self.active_connections() <= 0:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)
        figures.snapshots["closed"] = snapshot(self.stack)
        for name, service in self.stack.services.items():
            if service.log_path is None or not service.log_path.exists():
                continue
            text = service.log_path.read_bytes()[log_sizes.get(name, 0) :].decode(errors="replace")
            for raw in text.splitlines():
                if '"level": "error"' in raw or '"level": "critical"' in raw:
                    figures.error_log_lines.append(f"{name}: {raw[:300]}")
        return figures


async def run_soak(config: SoakConfig, *, dynamodb: str, run_dir: pathlib.Path) -> SoakFigures:
    stack = LocalStack(
        dynamodb_endpoint=dynamodb,
        table_prefix=f"soak{uuid.uuid4().hex[:8]}",
        env=SOAK_ENV,
        run_dir=run_dir,
        ready_timeout=90,
    )
    await stack.start()
    try:
        return await Soak(config, stack).run()
    finally:
        await stack.stop()
