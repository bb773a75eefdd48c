"""Several replicas of every service, added and removed under load, as on a cluster.

``LocalStack(connects=2, routers=2, processors=3, handlers=3)``: handlers and routers sit
behind DNS names (one loopback address per replica), and the stack's supervisor restarts
whatever dies, as a kubelet would. While async requests flow over both connects, a handler
replica is added, a router replica is taken out (out of its name, then SIGTERM), a processor
is SIGKILLed (the supervisor brings it back) and another added, and a handler replica is
taken out. Every accepted request must end exactly once and its client must hear it.

``streamer dev`` itself is driven too: ``--replicas`` starts the replicas, a killed service
is restarted with a line on stderr, and ``--exit-on-failure`` keeps the stop-everything
behaviour.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from e2e_helpers import E2E_ENV, Dev, echo, running_stack
from metricslib import Metrics, scrape

from streamer.client import StreamerClient
from streamer.client.errors import StreamerError
from streamer.local.stack import LocalStack
from streamer.store import COMPLETED, Store, request_key

REQUESTS = 40
CLIENTS = 6
RETRYABLE = ("SERVICE_UNAVAILABLE", "RATE_LIMITED", "INTERNAL_ERROR", "TIMEOUT")


class Completions:
    """Every `complete` a client received, by request id (the SDK drops replays; this does not)."""

    def __init__(self) -> None:
        self.seen: dict[str, list[str]] = collections.defaultdict(list)

    def __call__(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "complete" and isinstance(msg.get("request_id"), str):
            self.seen[msg["request_id"]].append(json.dumps(msg.get("result"), sort_keys=True))


async def _one(client: StreamerClient, rid: str, marker: str) -> dict[str, Any] | None:
    """Send until accepted (same id: idempotent), then wait for the outcome."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 150
    handle = None
    attempt = 0
    while loop.time() < deadline:
        if handle is None:
            attempt += 1
            try:
                handle = await client.start("echo_async", {"message": marker}, request_id=rid)
            except StreamerError as exc:
                if not (exc.retryable and exc.code in RETRYABLE):
                    raise
                await asyncio.sleep(min(2.0, 0.1 * attempt))
                continue
        try:
            return dict(await handle.result(timeout=max(1.0, deadline - loop.time())))
        except StreamerError as exc:
            if not handle.done:
                return None  # no outcome within the budget: the checks below say what is stored
            if exc.retryable and exc.code in RETRYABLE:
                handle = None  # refused before (or while) being accepted: send the same id again
                await asyncio.sleep(min(2.0, 0.1 * attempt))
                continue
            raise
    return None


async def _scale(stack: LocalStack, log: list[str]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()

    def note(text: str) -> None:
        log.append(text)
        print(f"  {loop.time() - start:6.1f} s  {text}")

    await asyncio.sleep(1.0)
    note(f"added {await stack.add_replica('handler')}")
    await stack.remove_replica("router-2")
    note("removed router-2")
    await stack.kill("processor-2")  # the supervisor restarts it
    note("killed processor-2")
    note(f"added {await stack.add_replica('processor')}")
    await stack.remove_replica("handler-2")
    note("removed handler-2")


@pytest.mark.timeout(400)
async def test_load_while_replicas_come_and_go(dynamodb: str, tmp_path: Any) -> None:
    env = {
        **E2E_ENV,
        "STREAMER_EXAMPLES_STEP_SECONDS": "0.1",
        "STREAMER_GRPC_MAX_CONNECTION_AGE_SECONDS": "2",
    }
    async with running_stack(
        dynamodb, tmp_path, env=env, connects=2, routers=2, processors=3, handlers=3
    ) as stack:
        events: list[str] = []
        stack.supervise(notify=events.append)
        assert stack.dns is not None
        assert len(stack.dns.addresses("handler.streamer.local")) == 3
        assert len(stack.dns.addresses("router.streamer.local")) == 2
        urls = stack.ws_urls
        recorders = [Completions() for _ in range(CLIENTS)]
        clients = [
            StreamerClient(
                urls[i % len(urls)],
                token=stack.token(user=f"user-{i}", tenant="acme"),
                reconnect_delay=0.1,
                on_message=recorders[i],
            )
            for i in range(CLIENTS)
        ]
        for client in clients:
            await client.connect()
        run = uuid.uuid4().hex[:6]
        markers = {f"rep-{run}-{i:03d}": f"m-{i}-{uuid.uuid4().hex[:6]}" for i in range(REQUESTS)}
        gate = asyncio.Semaphore(12)

        took: dict[str, float] = {}

        async def paced(i: int, rid: str) -> dict[str, Any] | None:
            await asyncio.sleep(i * 0.1)
            async with gate:
                begun = asyncio.get_running_loop().time()
                try:
                    return await _one(clients[i % CLIENTS], rid, markers[rid])
                finally:
                    took[rid] = asyncio.get_running_loop().time() - begun

        scaling: list[str] = []
        try:
            results = await asyncio.gather(
                *(paced(i, rid) for i, rid in enumerate(markers)), _scale(stack, scaling)
            )
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.close()
        slowest = sorted(took.items(), key=lambda kv: -kv[1])[:3]
        print(f"  slowest requests: {[(rid, round(t, 1)) for rid, t in slowest]}; supervisor: {events}")
        assert scaling == [
            "added handler-4",
            "removed router-2",
            "killed processor-2",
            "added processor-4",
            "removed handler-2",
        ]
        async with Store.open(settings=stack.settings) as store:
            records = {rid: await store.requests.get(request_key("acme", rid)) for rid in markers}
        lost = {rid: rec for rid, rec in records.items() if rec is None or rec.status != COMPLETED}
        assert not lost, f"not completed: {lost}"
        for i, (rid, marker) in enumerate(markers.items()):
            result = results[i]
            assert result is not None and result["message"] == marker, (rid, result)
            seen = set(recorders[i % CLIENTS].seen[rid])
            assert len(seen) == 1, f"{rid}: distinct completions {seen}"  # never two different outcomes
        assert any("processor-2 exited" in e for e in events) and any(
            "processor-2 is back" in e for e in events
        )
        assert stack.service("processor-2").running
        assert "router-2" not in stack.services and "handler-2" not in stack.services
        assert len(stack.dns.addresses("handler.streamer.local")) == 3  # handler, handler-3, handler-4


async def _dev(dynamodb: str, *args: str) -> Dev:
    """``streamer dev`` on the session's DynamoDB Local, without the demo page."""
    prefix = f"dev{uuid.uuid4().hex[:6]}"
    return await Dev("--dynamodb-endpoint", dynamodb, "--table-prefix", prefix, "--no-page", *args).start()


async def _read_until(stream: asyncio.StreamReader, needle: str, *, timeout: float) -> list[str]:
    lines: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"stream closed before {needle!r}; got:\n" + "\n".join(lines))
            lines.append(raw.decode().rstrip())
            if needle in lines[-1]:
                return lines


async def test_dev_replicas_and_restart_with_backoff(dynamodb: str) -> None:
    dev = await _dev(dynamodb, "--replicas", "router=2,handler=2,processor=2")
    proc = dev.proc
    assert proc is not None
    try:
        assert proc.stderr is not None
        routers = _processes_of(proc.pid, "router")
        assert len(routers) == 2 and len(_processes_of(proc.pid, "handler")) == 2
        victim = _processes_of(proc.pid, "processor")[0]
        os.kill(victim, signal.SIGKILL)
        lines = await _read_until(proc.stderr, "is back", timeout=60)
        assert any("exited with status -9; restarting in 0.5 s (restart 1)" in line for line in lines), lines
        assert await echo(dev.url, "still here") == "still here"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_dev_exit_on_failure_stops_everything(dynamodb: str) -> None:
    proc = (await _dev(dynamodb, "--exit-on-failure")).proc
    assert proc is not None
    try:
        os.kill(_processes_of(proc.pid, "processor")[0], signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), timeout=60) == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _processes_of(launcher: int, kind: str) -> list[int]:
    """The launcher's children of one kind (``streamer.cli.main <kind>``), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            if ppid != launcher:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if len(argv) > 3 and argv[1:3] == [b"-m", b"streamer.cli.main"] and argv[3] == kind.encode():
            found.append(int(entry))
    return sorted(found)


async def _share_once_joined(
    stack: LocalStack,
    session: Any,
    *,
    kind: str,
    count: Callable[[Metrics], float],
    round_of: Callable[[int], Awaitable[None]],
    enough: float,
) -> tuple[str, float, float]:
    """Add a ``kind`` replica, then run rounds of requests until it takes ``enough`` of a
    round (by ``count`` of each replica's /metrics) or 60 s pass: (name, share, seconds)."""

    async def counts() -> dict[str, float]:
        names = [n for n, s in stack.services.items() if s.kind == kind]
        found = {}
        for name in names:
            service = stack.service(name)
            found[name] = count(await scrape(service.http_port, host=service.host, session=session))
        return found

    newcomer = await stack.add_replica(kind)
    loop = asyncio.get_running_loop()
    joined = loop.time()
    share = 0.0
    while loop.time() - joined < 60 and share < enough:
        before = await counts()
        await round_of(30)
        after = await counts()
        total = sum(after.values()) - sum(before.values())
        share = (after[newcomer] - before[newcomer]) / max(1, total)
    return newcomer, share, loop.time() - joined


async def test_a_router_started_later_gets_its_share(dynamodb: str, tmp_path: Any) -> None:
    """connect reaches the routers through one DNS name; a third router joins and is used."""
    env = {**E2E_ENV, "STREAMER_GRPC_MAX_CONNECTION_AGE_SECONDS": "1"}
    async with (
        running_stack(dynamodb, tmp_path, env=env, routers=2) as stack,
        aiohttp.ClientSession() as session,
        StreamerClient(stack.ws_url, token=stack.token(user="u", tenant="t"), heartbeat=None) as client,
    ):

        async def round_of(n: int) -> None:
            for i in range(n):
                await client.request("echo", {"message": f"m{i}"}, timeout=30)

        await round_of(20)
        newcomer, share, took = await _share_once_joined(
            stack,
            session,
            kind="router",
            count=lambda m: m.total("streamer_router_requests_total", action="echo"),
            round_of=round_of,
            enough=0.2,
        )
        print(f"\n{newcomer}: {share:.0%} of a round's calls {took:.1f} s after it joined")
        assert share >= 0.2


async def test_a_processor_started_later_gets_its_share_of_offers(dynamodb: str, tmp_path: Any) -> None:
    """The routers offer new requests to the processors behind one DNS name, re-resolved
    every 5 s; a third processor joins the name and is offered its share."""
    env = {**E2E_ENV, "STREAMER_EXAMPLES_STEP_SECONDS": "0.01"}
    async with (
        running_stack(dynamodb, tmp_path, env=env, routers=2, processors=2) as stack,
        aiohttp.ClientSession() as session,
        StreamerClient(stack.ws_url, token=stack.token(user="u", tenant="t"), heartbeat=None) as client,
    ):
        assert stack.dns is not None
        assert len(stack.dns.addresses("processor.streamer.local")) == 2
        router_env = stack.service("router").env["STREAMER_PROCESSOR_ADDRESSES"]
        assert router_env.startswith("dns://") and "processor.streamer.local" in router_env

        async def round_of(n: int) -> None:
            await asyncio.gather(
                *(client.request("echo_async", {"message": f"m{i}"}, timeout=60) for i in range(n))
            )

        await round_of(10)
        newcomer, share, took = await _share_once_joined(
            stack,
            session,
            kind="processor",
            count=lambda m: m.total("streamer_processor_offers_total", outcome="accepted"),
            round_of=round_of,
            enough=0.15,
        )
        assert len(stack.dns.addresses("processor.streamer.local")) == 3
        print(f"\n{newcomer}: {share:.0%} of a round's accepted offers {took:.1f} s after it joined")
        assert share >= 0.15
