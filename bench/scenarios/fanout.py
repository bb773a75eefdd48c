"""(4) Fan-out: ``Router.Publish`` to a tenant of 1000 sockets on two connect processes,
against a bare aiohttp server writing one frame to 1000 sockets.

The clock starts just before the harness makes the call (gRPC ``Publish`` to the
router / ``POST /broadcast`` to the bare server) and stops when the last of the
sockets has the frame — each client process stamps arrivals with CLOCK_MONOTONIC,
which every process on the machine shares. Per run, a new set of sockets (a new
tenant) gets several publishes; the run's figure is their median.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bench.context import Context
from bench.load import split, start_workers
from bench.procs import Child, stop_all
from bench.report import Row, Target
from bench.stats import Series


async def _last_arrival(
    children: list[Child], *, seq: int, expected: int, timeout: float
) -> tuple[float, int]:
    """The latest arrival time of frame ``seq`` across workers, once all have it (or timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await asyncio.sleep(0.2)
        for c in children:
            await c.send("report")
        reports = await asyncio.gather(*(c.expect("report", timeout=10) for c in children))
        got = [r["seqs"].get(str(seq)) for r in reports]
        count = sum(g[0] for g in got if g)
        if count >= expected or loop.time() > deadline:
            last = max((g[1] for g in got if g), default=float("nan"))
            return last, count


async def _run_one(
    ctx: Context,
    *,
    urls: list[str],
    tenant: str,
    label: str,
    publish: Callable[[int], Awaitable[dict[str, Any]]],
) -> tuple[list[float], list[str]]:
    s = ctx.sizes
    n = s.fanout_connections
    specs = []
    base = 0
    for count in split(n, s.conn_procs):
        specs.append(
            ctx.worker_spec(
                urls=urls,
                count=count,
                concurrency=s.conn_open_concurrency,
                index_base=base,
                tenant=tenant,
                user_prefix=f"f{label}",
            )
        )
        base += count
    children = await start_workers("hold", specs, label=label)
    notes: list[str] = []
    times: list[float] = []
    try:
        await asyncio.gather(*(c.send("go") for c in children))
        opened = await asyncio.gather(*(c.expect("opened", timeout=s.max_child_seconds) for c in children))
        ok = sum(int(o["ok"]) for o in opened)
        if ok < n:
            notes.append(
                f"{label}: only {ok}/{n} sockets opened {[e for o in opened for e in o['errors']][:2]}"
            )
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        for seq in range(1, s.fanout_publishes + 1):
            t0 = loop.time()
            answer = await publish(seq)
            last, count = await _last_arrival(children, seq=seq, expected=ok, timeout=15)
            if count < ok:
                notes.append(f"{label} publish {seq}: {count}/{ok} received; {answer}")
            times.append((last - t0) * 1000)
            await asyncio.sleep(0.2)
    finally:
        await stop_all(children)
    return times, notes


async def run(ctx: Context, *, stack: Any) -> list[Row]:
    from streamer import rpc
    from streamer.api.v1 import router_pb2, router_pb2_grpc

    s = ctx.sizes
    bare = await Child.start(name="fanout-bare", module="bench.servers.bare_ws")
    bare_url = f"http://127.0.0.1:{(await bare.expect('ready', timeout=30))['port']}"
    channel = rpc.channel(stack.service("router").grpc_address)
    router = router_pb2_grpc.RouterStub(channel)
    series = {"streamer": Series(), "bare": Series()}
    try:
        async with aiohttp.ClientSession() as http:
            for r in range(s.runs):
                tenant = f"fan-{ctx.tag}-{r}"

                async def publish_bare(seq: int) -> dict[str, Any]:
                    body = json.dumps({"type": "message", "bench_seq": seq})
                    async with http.post(f"{bare_url}/broadcast", data=body) as resp:
                        return dict(await resp.json())

                async def publish_streamer(seq: int, tenant: str = tenant) -> dict[str, Any]:
                    reply = await router.Publish(
                        router_pb2.PublishRequest(
                            target=router_pb2.PublishTarget(tenant_id=tenant),
                            message=rpc.dumps({"type": "message", "bench_seq": seq}),
                        ),
                        timeout=30,
                    )
                    return {"matched": reply.matched, "delivered": reply.delivered, "failed": reply.failed}

                for system, urls, publish in (
                    ("bare", [f"ws{bare_url[4:]}/ws"], publish_bare),
                    ("streamer", stack.ws_urls[:2], publish_streamer),
                ):
                    times, notes = await _run_one(
                        ctx, urls=urls, tenant=tenant, label=f"fan-{system}-{r}", publish=publish
                    )
                    ctx.notes.extend(notes)
                    series[system].add(statistics.median(times) if times else float("nan"))
    finally:
        await channel.close(None)
        await bare.stop()
    n = s.fanout_connections
    return [
        Row(
            scenario="4 fan-out",
            case=f"{n} sockets",
            metric="publish → last socket",
            unit="ms",
            streamer=series["streamer"],
            baseline=series["bare"],
            baseline_name="bare aiohttp, 1 process",
            target=Target("ratio_max", 2.0),
            note="Streamer: 2 connect processes" if len(stack.ws_urls) > 1 else "Streamer: 1 connect process",
        )
    ]


async def replay(ctx: Context, *, stack: Any, seconds: float, started: asyncio.Event) -> None:
    """Publish to a tenant of ``fanout_connections`` sockets back to back for ``seconds`` (profiling)."""
    from streamer import rpc
    from streamer.api.v1 import router_pb2, router_pb2_grpc

    s = ctx.sizes
    tenant = f"fanprof-{ctx.tag}"
    specs = [
        ctx.worker_spec(
            urls=stack.ws_urls[:2],
            count=c,
            concurrency=s.conn_open_concurrency,
            index_base=i * c,
            tenant=tenant,
            user_prefix="fprof",
        )
        for i, c in enumerate(split(s.fanout_connections, s.conn_procs))
    ]
    children = await start_workers("hold", specs, label="profile-fanout")
    channel = rpc.channel(stack.service("router").grpc_address)
    try:
        await asyncio.gather(*(c.send("go") for c in children))
        await asyncio.gather(*(c.expect("opened", timeout=s.max_child_seconds) for c in children))
        router = router_pb2_grpc.RouterStub(channel)
        started.set()
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        seq = 0
        while loop.time() < end and seq < 100_000:
            seq += 1
            await router.Publish(
                router_pb2.PublishRequest(
                    target=router_pb2.PublishTarget(tenant_id=tenant),
                    message=rpc.dumps({"type": "message", "bench_seq": seq}),
                ),
                timeout=30,
            )
    finally:
        await channel.close(None)
        await stop_all(children)
