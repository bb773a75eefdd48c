"""(2) Sync round trip: ``echo`` at 1/10/100 concurrent clients vs the bare chain.

Each client is one WebSocket with one request outstanding (closed loop: send, wait for
the reply, send again). Latency counts requests sent inside the measured window (after
a warm-up); requests/s counts replies received inside it. Streamer and the bare chain
(aiohttp WS → grpc.aio Route → grpc.aio Invoke → back, forwarding only) are measured
alternately within each run, so machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.context import Context
from bench.load import errors, merged, run_load, split
from bench.procs import Child
from bench.report import Row, Target
from bench.stats import Series, percentile


async def start_chain(ctx: Context) -> str:
    """Start bare handler, router and WebSocket front; return the front's URL."""
    handler = await Child.start(
        name="chain-handler", module="bench.servers.bare_grpc", args=["--role", "handler"]
    )
    ctx.chain.append(handler)
    hport = (await handler.expect("ready", timeout=30))["port"]
    router = await Child.start(
        name="chain-router",
        module="bench.servers.bare_grpc",
        args=["--role", "router", "--handler", f"127.0.0.1:{hport}"],
    )
    ctx.chain.append(router)
    rport = (await router.expect("ready", timeout=30))["port"]
    front = await Child.start(
        name="chain-front", module="bench.servers.bare_ws", args=["--router", f"127.0.0.1:{rport}"]
    )
    ctx.chain.append(front)
    port = (await front.expect("ready", timeout=30))["port"]
    return f"ws://127.0.0.1:{port}/ws"


async def measure(
    ctx: Context,
    *,
    url: str,
    clients: int,
    label: str,
    warmup: float,
    duration: float,
    auth: bool,
    started: asyncio.Event | None = None,
) -> dict[str, Any]:
    s = ctx.sizes
    specs = [
        ctx.worker_spec(
            urls=[url],
            count=n,
            action="echo",
            warmup=warmup,
            duration=duration,
            user_prefix=f"s{label}",
            tenant=f"sync-{ctx.tag}",
            **({} if auth else {"secret": None}),
        )
        for n in split(clients, s.client_procs(clients))
    ]
    reports = await run_load("sync", specs, label=label, timeout=warmup + duration + 30, started=started)
    lat = merged(reports, "latencies")
    count, samples = errors(reports)
    return {
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "rps": sum(int(r["completed"]) for r in reports) / duration,
        "errors": count,
        "error_samples": samples,
        "samples": len(lat),
    }


async def run(ctx: Context, *, chain_url: str, streamer_url: str) -> list[Row]:
    s = ctx.sizes
    series: dict[tuple[str, int, str], Series] = {}
    for r in range(s.runs):
        for clients in s.sync_levels:
            for system, url in (("bare", chain_url), ("streamer", streamer_url)):
                result = await measure(
                    ctx,
                    url=url,
                    clients=clients,
                    label=f"sync-{system}-{clients}-{r}",
                    warmup=s.sync_warmup_seconds,
                    duration=s.sync_seconds,
                    auth=system == "streamer",
                )
                if result["errors"]:
                    ctx.notes.append(
                        f"sync {system} {clients} clients run {r}: "
                        f"{result['errors']} errors {result['error_samples']}"
                    )
                for key in ("p50", "p99", "rps"):
                    series.setdefault((system, clients, key), Series()).add(result[key])
    rows: list[Row] = []
    for clients in s.sync_levels:
        case = f"{clients} client{'s' if clients > 1 else ''}"
        for key, metric, unit, target in (
            ("p50", "p50", "ms", None),
            ("p99", "p99", "ms", Target("ratio_max", 1.5)),
            ("rps", "throughput", "req/s", Target("ratio_min", 0.6)),
        ):
            rows.append(
                Row(
                    scenario="2 sync echo",
                    case=case,
                    metric=metric,
                    unit=unit,
                    streamer=series[("streamer", clients, key)],
                    baseline=series[("bare", clients, key)],
                    baseline_name="bare WS→gRPC→gRPC",
                    target=target,
                )
            )
    return rows
