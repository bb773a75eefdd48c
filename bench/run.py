"""``python -m bench.run`` (``make bench``): every scenario, one table, one JSON file.

Starts everything it measures itself — one DynamoDB Local, Streamer stacks
(``streamer.local.stack.LocalStack``), the bare baselines, Redis + python-socketio +
Celery — drives them from client processes on 127.0.0.1, prints the table and writes
``bench/results/latest.json``. ``--quick`` runs tiny sizes once (the smoke test).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import pathlib
import platform
import shlex
import shutil
import signal
import sys
import time
from typing import Any

from bench import prepare as prep
from bench.context import Context, context
from bench.procs import RESULTS
from bench.report import Row, markdown, print_table, write_json
from bench.sizes import FULL, QUICK, Sizes

SCENARIOS = ("connections", "sync", "async", "fanout", "peer", "aws", "profile")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = f"{int(fh.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_pressure_at_start": cpu_pressure(),
    }


def cpu_pressure() -> str:
    """/proc/pressure/cpu's first line: how much of the time runnable tasks waited for a CPU."""
    try:
        with open("/proc/pressure/cpu") as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes, one run (smoke test)")
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    p.add_argument("--runs", type=int, default=None, help="runs per figure (default 3; --quick: 1)")
    p.add_argument(
        "--async-levels",
        default=None,
        metavar="N,N",
        help="in-flight levels of the async scenario (default 10,100; --quick: 4); the DynamoDB "
        "call count runs at the lowest",
    )
    p.add_argument(
        "--conn-levels",
        default=None,
        metavar="N,N",
        help="socket counts of the connections scenario (default 1000,5000,10000; --quick: 60,120)",
    )
    p.add_argument(
        "--count-requests",
        type=int,
        default=None,
        help="echo/echo_async requests sent through the counting DynamoDB proxy (default 100; --quick: 8)",
    )
    p.add_argument("--out", default=str(RESULTS / "latest.json"), help="where to write the JSON")
    p.add_argument("--markdown", default=None, help="also write the table as markdown to this file")
    p.add_argument(
        "--profile-top", type=int, default=2, help="profile this many of the worst rows (distinct scenarios)"
    )
    p.add_argument(
        "--profile",
        default=None,
        metavar="SCENARIOS",
        help="profile these instead of the worst rows (comma-separated: connections,sync,async,fanout)",
    )
    args = p.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {sorted(unknown)}")
    return args


async def _main(
    args: argparse.Namespace, sizes: Sizes, found: dict[str, Any]
) -> tuple[list[Row], dict[str, Any]]:
    from bench.scenarios import async_jobs, connections, fanout, profile, sync

    only = set(args.only.split(","))
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    async with context(sizes=sizes, quick=args.quick) as ctx:
        timings: dict[str, float] = {}

        def lap(name: str, since: float) -> None:
            timings[name] = round(time.monotonic() - since, 1)
            print(f"bench: {name} done in {timings[name]:.0f}s", file=sys.stderr, flush=True)

        if "connections" in only:
            t = time.monotonic()
            rows += await connections.run(ctx)
            lap("connections", t)
        needs_main = only & {"sync", "async", "peer", "fanout", "profile"}
        if needs_main:
            t = time.monotonic()
            ctx.main_stack = await ctx.start_stack(name="main", connects=2)
            lap("main stack start", t)
        streamer_url = ctx.main_stack.ws_url if ctx.main_stack else ""
        chain_url = ""
        if "sync" in only or "profile" in only:
            chain_url = await sync.start_chain(ctx)
        if "sync" in only:
            t = time.monotonic()
            rows += await sync.run(ctx, chain_url=chain_url, streamer_url=streamer_url)
            lap("sync", t)
        if "async" in only or "peer" in only:
            t = time.monotonic()
            peer_parts: list[Any] = []
            peer_url = None
            if "peer" in only and found.get("redis_server"):
                peer_url, peer_parts = await async_jobs.start_peer(
                    ctx, redis_binary=str(found["redis_server"])
                )
            try:
                rows += await async_jobs.run(ctx, streamer_url=streamer_url, peer_url=peer_url)
            finally:
                await async_jobs.stop_peer(peer_parts)
            lap("async+peer", t)
        if "aws" in only:
            t = time.monotonic()
            rows += await async_jobs.aws_shaped(ctx)
            lap("aws", t)
        if "fanout" in only:
            t = time.monotonic()
            rows += await fanout.run(ctx, stack=ctx.main_stack)
            lap("fanout", t)
        if "profile" in only and (rows or args.profile):
            t = time.monotonic()
            infos = await profile.run(
                ctx,
                rows=rows,
                replays=_replays(ctx, streamer_url),
                top=args.profile_top,
                force=[x for x in (args.profile or "").split(",") if x],
            )
            extra["profile"] = infos[0] if infos else {"error": "no row with a ratio target"}
            extra["profile_more"] = infos[1:]
            lap("profile", t)
        extra["timings_seconds"] = timings
        extra["notes"] = ctx.notes
        extra.update(ctx.extra)
    return rows, extra


def _replays(ctx: Context, streamer_url: str) -> dict[str, Any]:
    """How to reproduce each scenario's load on the main stack for ``seconds`` (profiling)."""
    from bench.load import split, start_workers
    from bench.procs import stop_all
    from bench.scenarios import async_jobs, sync

    def clients_of(row: Row) -> int:
        return int(row.case.split()[0])

    async def replay_sync(row: Row, seconds: float, started: asyncio.Event) -> None:
        await sync.measure(
            ctx,
            url=streamer_url,
            clients=clients_of(row),
            label="profile-sync",
            warmup=0.5,
            duration=seconds,
            auth=True,
            started=started,
        )

    async def replay_async(row: Row, seconds: float, started: asyncio.Event) -> None:
        await async_jobs.measure(
            ctx,
            kind="async",
            url=streamer_url,
            in_flight=clients_of(row),
            label="profile-async",
            duration=seconds,
            started=started,
        )

    async def replay_connections(row: Row, seconds: float, started: asyncio.Event) -> None:
        n = max(ctx.sizes.conn_levels)
        specs = [
            ctx.worker_spec(
                urls=[streamer_url],
                count=c,
                concurrency=ctx.sizes.conn_open_concurrency,
                user_prefix="prof",
                tenant=f"prof-{ctx.tag}",
                index_base=i * c,
                deadline_seconds=seconds,
            )
            for i, c in enumerate(split(n, ctx.sizes.conn_procs))
        ]
        children = await start_workers("hold", specs, label="profile-conn")
        try:
            await asyncio.gather(*(c.send("go") for c in children))
            started.set()
            await asyncio.gather(*(c.expect("opened", timeout=seconds + 120) for c in children))
        finally:
            await stop_all(children)

    async def replay_fanout(row: Row, seconds: float, started: asyncio.Event) -> None:
        from bench.scenarios import fanout

        await fanout.replay(ctx, stack=ctx.main_stack, seconds=seconds, started=started)

    return {
        "sync": replay_sync,
        "async": replay_async,
        "peer": replay_async,
        "connections": replay_connections,
        "fan-out": replay_fanout,
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    if args.async_levels:
        sizes = dataclasses.replace(sizes, async_levels=tuple(int(n) for n in args.async_levels.split(",")))
    if args.conn_levels:
        sizes = dataclasses.replace(sizes, conn_levels=tuple(int(n) for n in args.conn_levels.split(",")))
    if args.count_requests:
        sizes = dataclasses.replace(sizes, count_requests=args.count_requests)
    started = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    meta: dict[str, Any] = {
        "command": " ".join(
            ["python -m bench.run", *(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))]
        ),
        "started": started_at,
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
        "machine": machine(),
    }
    # Logs, stack directories and profiles describe the latest run only.
    for sub in ("logs", "stacks", "profile"):
        shutil.rmtree(RESULTS / sub, ignore_errors=True)
    # SIGTERM (a `timeout`, CI) unwinds like Ctrl-C, so stacks and children are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    found = prep.prepare(need_peer="peer" in args.only.split(","))
    meta["prepare"] = found
    rows, extra = asyncio.run(_main(args, sizes, found))
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["cpu_pressure_at_end"] = cpu_pressure()
    out = pathlib.Path(args.out)
    write_json(out, meta=meta, rows=rows, extra=extra)
    kind = "quick" if args.quick else "full"
    title = f"Streamer benchmarks ({kind}, {sizes.runs} run(s), {meta['seconds']:.0f}s)"
    print_table(rows, title=title)
    # the same table as markdown beside the JSON (docs/benchmarks.md quotes it)
    out.with_suffix(".md").write_text(markdown(rows))
    if args.markdown:
        pathlib.Path(args.markdown).write_text(markdown(rows))
    _print_extra(extra)
    print(f"bench: wrote {out}", file=sys.stderr)
    return 0


_ENTRY_FRAMES = (
    "main (",
    "<module> (",
    "run (services/",
    "run (examples/",
    "run (streamer/cli/",
    "serve (streamer/",
)


def _print_extra(extra: dict[str, Any]) -> None:
    calls = extra.get("dynamodb_calls_per_request")
    if calls:
        for action in ("echo", "echo_async"):
            if action in calls:
                c = calls[action]
                print(
                    f"DynamoDB per {action} request ({c['requests']} sent): "
                    f"writes {c['writes_per_request']}, "
                    f"reads {c['reads_per_request']}  {c['per_request']}"
                )
    for i, prof in enumerate([extra.get("profile"), *extra.get("profile_more", [])]):
        if not prof or "processes" not in prof:
            continue
        row = prof["row"]
        print(
            f"Profile of the {'worst' if i == 0 else 'next worst'} ratio: {row['scenario']} / "
            f"{row['case']} / {row['metric']} (ratio {row['ratio']}); raw stacks in {prof.get('raw_dir')}"
        )
        for name, summary in prof["processes"].items():
            if "error" in summary:
                print(f"  {name}: {summary['error'][:200]}")
                continue
            ours = [f"{k} {v}%" for k, v in summary["ours_inclusive"] if not k.startswith(_ENTRY_FRAMES)][:3]
            libs = ", ".join(f"{k} {v}%" for k, v in summary["libraries"][:4])
            print(f"  {name} ({summary['samples']} samples): {libs}")
            if ours:
                print(f"      ours (inclusive): {'; '.join(ours)}")
    for note in extra.get("notes", [])[:20]:
        print(f"note: {note}")


if __name__ == "__main__":
    raise SystemExit(main())
