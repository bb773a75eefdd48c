"""(1) Connections held: memory per connection and time to open, Streamer vs a bare server.

Per run, each server starts fresh (Streamer: a new stack with one connect process on
the shared DynamoDB Local; bare: a new aiohttp+uvloop process). A warm-up set of
sockets is opened first (so lazily built things — the JWT verifier, the DynamoDB
client pool — are not charged to the connections), its RSS read, then the levels are
reached in stages, each stage's sockets opened by several client processes at once
with bounded handshakes in flight. Per level:

- RSS/conn = (VmRSS at the level - VmRSS after warm-up) / (sockets opened since warm-up);
- open time = the summed wall time of the stages up to that level, from ``go`` to the
  last client process reporting its sockets open (Streamer: JWT checked and the
  connection record written to DynamoDB before each 101).

Each server gets ``conn_budget_seconds`` per run: no handshake starts after it, so a
slow server shows up as fewer sockets ``held`` (and a note) instead of a run that never
ends.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench.context import Context
from bench.load import split, start_workers
from bench.procs import Child, rss_kib, stop_all
from bench.report import Row, Target
from bench.stats import Series

WARM = 50  # sockets opened before the first RSS reading (fewer with tiny levels)


def _level_name(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


async def _measure(ctx: Context, *, system: str, run: int) -> dict[int, dict[str, float]]:
    """One fresh server, the levels in stages; per level: rss_per_conn, open_seconds, held."""
    s = ctx.sizes
    server: Child | None = None
    stack: Any = None
    if system == "bare":
        server = await Child.start(name=f"conn-bare-{run}", module="bench.servers.bare_ws")
        url = f"ws://127.0.0.1:{(await server.expect('ready', timeout=30))['port']}/ws"
        pid = server.pid
    else:
        stack = await ctx.start_stack(name=f"conn{run}", connects=1)
        url = stack.ws_url
        pid = stack.service("connect").pid
    holders: list[Child] = []
    out: dict[int, dict[str, float]] = {}
    try:
        base = 0

        loop = asyncio.get_running_loop()
        budget_end = loop.time() + s.conn_budget_seconds

        async def stage(count: int, procs: int, label: str) -> tuple[float, int, list[str]]:
            nonlocal base
            specs = []
            left = max(0.0, budget_end - loop.time())
            for n in split(count, procs):
                specs.append(
                    ctx.worker_spec(
                        urls=[url],
                        count=n,
                        concurrency=s.conn_open_concurrency,
                        index_base=base,
                        user_prefix=f"c{run}",
                        tenant=f"conn-{ctx.tag}-{run}",
                        deadline_seconds=left,
                    )
                )
                base += n
            children = await start_workers("hold", specs, label=label)
            holders.extend(children)
            t0 = loop.time()
            await asyncio.gather(*(c.send("go") for c in children))
            reports = await asyncio.gather(
                *(c.expect("opened", timeout=s.max_child_seconds) for c in children)
            )
            elapsed = loop.time() - t0
            ok = sum(int(r["ok"]) for r in reports)
            errs = [e for r in reports for e in r.get("errors", [])][:3]
            return elapsed, ok, errs

        warm = min(WARM, max(1, s.conn_levels[0] // 5))
        _, warm_ok, errs = await stage(warm, 1, f"conn-{system}-{run}-warm")
        if warm_ok < warm:
            raise RuntimeError(f"{system}: only {warm_ok}/{warm} warm-up connections opened: {errs}")
        await asyncio.sleep(s.conn_settle_seconds)
        rss0 = rss_kib(pid)
        held, total_time, reached = warm_ok, 0.0, warm
        for level in s.conn_levels:
            add = level - reached
            if add <= 0:
                continue
            elapsed, ok, errs = await stage(add, s.conn_procs, f"conn-{system}-{run}-{level}")
            reached = level
            held += ok
            total_time += elapsed
            await asyncio.sleep(s.conn_settle_seconds)
            rss = rss_kib(pid)
            out[level] = {
                "rss_per_conn_kib": (rss - rss0) / max(1, held - warm_ok),
                "open_seconds": total_time,
                "held": held,
                "rss_kib": rss,
            }
            if ok < add:
                ctx.notes.append(
                    f"connections {system} run {run} level {level}: {ok}/{add} opened within the "
                    f"{s.conn_budget_seconds:g}s budget; errors: {errs}"
                )
        return out
    finally:
        await stop_all(holders)
        if server is not None:
            await server.stop()
        if stack is not None:
            await ctx.stop_stack(stack)


async def run(ctx: Context) -> list[Row]:
    s = ctx.sizes
    series: dict[tuple[str, int, str], Series] = {}
    raw: list[dict[str, Any]] = []
    for r in range(s.runs):
        for system in ("bare", "streamer"):
            result = await _measure(ctx, system=system, run=r)
            raw.append({"system": system, "run": r, "levels": result})
            for level, figures in result.items():
                for key, value in figures.items():
                    series.setdefault((system, level, key), Series()).add(value)
    ctx.extra["connections_raw"] = json.loads(json.dumps(raw))
    rows: list[Row] = []
    top = max(s.conn_levels)
    for level in s.conn_levels:
        name = _level_name(level)
        rows.append(
            Row(
                scenario="1 connections",
                case=name,
                metric="RSS/conn",
                unit="KiB",
                streamer=series[("streamer", level, "rss_per_conn_kib")],
                baseline=series[("bare", level, "rss_per_conn_kib")],
                baseline_name="bare aiohttp",
                target=Target("ratio_max", 2.0) if level == top else None,
            )
        )
        rows.append(
            Row(
                scenario="1 connections",
                case=name,
                metric="time to open",
                unit="s",
                streamer=series[("streamer", level, "open_seconds")],
                baseline=series[("bare", level, "open_seconds")],
                baseline_name="bare aiohttp",
            )
        )
    rows.append(
        Row(
            scenario="1 connections",
            case=_level_name(top),
            metric="held",
            unit="sockets",
            streamer=series[("streamer", top, "held")],
            baseline=series[("bare", top, "held")],
            baseline_name="bare aiohttp",
            target=Target("abs_min", float(top)),
        )
    )
    return rows
