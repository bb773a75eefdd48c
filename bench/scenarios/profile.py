"""(6) Profile the worst ratio: replay its load and sample every Streamer process with py-spy.

The row chosen is the one furthest from its target (or, when all are met, the one with
the least room). Its load runs again on the main stack while ``py-spy record`` samples
connect, router, processor and handler (non-blocking, raw collapsed stacks, idle
threads excluded). The summary per process: where the samples are (self time by
function), how much passes through each of our functions (inclusive), and the share of
each library — the numbers docs/benchmarks.md discusses.
"""

from __future__ import annotations

import asyncio
import collections
import math
import pathlib
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from bench.context import Context
from bench.prepare import py_spy
from bench.procs import REPO, RESULTS
from bench.report import Row
from bench.stats import Series

OURS = ("streamer/", "services/", "examples/")
NATIVE_LEAVES = ("Runner.run (", "Thread.run (", "BaseEventLoop.run_forever (", "Thread._bootstrap_inner (")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*)\)$")


def _where(file: str) -> tuple[str, bool]:
    """A short place name for a frame's file, and whether it is our code."""
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1], False
    root = str(REPO) + "/"
    if file.startswith(root):
        rel = file[len(root) :]
        return rel, rel.startswith(OURS)
    if "/lib/python3" in file:
        return "stdlib:" + file.rsplit("/lib/python3", 1)[1].split("/", 1)[-1], False
    return file, False


def _library(place: str, ours: bool) -> str:
    if ours:
        return "/".join(place.split("/")[:2])
    if place.startswith("stdlib:"):
        rest = place[len("stdlib:") :]
        return "stdlib:" + rest.split("/")[0].removesuffix(".py")
    return place.split("/")[0].removesuffix(".py")


def summarize(raw: str, *, top: int = 12) -> dict[str, Any]:
    """Self and inclusive sample counts from py-spy's raw (collapsed) output."""
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    libs: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            if not m:
                continue
            place, ours = _where(m["file"])
            frames.append((f"{m['func']} ({place})", ours, _library(place, ours)))
        if not frames:
            continue
        name, _, lib = frames[-1]
        if name.startswith(NATIVE_LEAVES):
            # Python's last frame is the loop or a thread's run(): the time is in C below
            # it (uvloop's I/O and callbacks, grpc's completion queue, a blocking get).
            name, lib = "(in C under the event loop / a thread)", "(native)"
        self_time[name] += count
        libs[lib] += count
        for seen in {f[0] for f in frames if f[1]}:
            inclusive[seen] += count

    def pct(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "self": [(k, pct(v)) for k, v in self_time.most_common(top)],
        "ours_inclusive": [(k, pct(v)) for k, v in inclusive.most_common(top)],
        "libraries": [(k, pct(v)) for k, v in libs.most_common(top)],
    }


async def record(pids: dict[str, int], *, seconds: float, out_dir: pathlib.Path) -> dict[str, Any]:
    """py-spy on every pid for ``seconds``; returns a summary per process name."""
    binary = py_spy()
    if binary is None:
        return {"error": "py-spy not installed (pip install -e '.[bench]')"}
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    procs = {}
    for name, pid in pids.items():
        procs[name] = await asyncio.create_subprocess_exec(
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--full-filenames",
            "--nolineno",
            "--output",
            str(out_dir / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    summary: dict[str, Any] = {}
    for name, proc in procs.items():
        try:
            _, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
        except TimeoutError:
            proc.kill()
            summary[name] = {"error": "py-spy did not finish"}
            continue
        path = out_dir / f"{name}.txt"
        if proc.returncode != 0 or not path.exists():
            summary[name] = {"error": err.decode(errors="replace")[-500:]}
            continue
        summary[name] = summarize(path.read_text(errors="replace"))
    return summary


def ranked(rows: Sequence[Row]) -> list[Row]:
    """Rows with a ratio target, furthest from it first, one per scenario."""
    candidates = [
        r
        for r in rows
        if r.target is not None and r.target.kind.startswith("ratio") and not math.isnan(r.margin)
    ]
    seen: set[str] = set()
    out = []
    for r in sorted(candidates, key=lambda r: r.margin, reverse=True):
        if r.scenario not in seen:
            seen.add(r.scenario)
            out.append(r)
    return out


Replay = Callable[[Row, float, asyncio.Event], Coroutine[Any, Any, None]]


async def profile_row(ctx: Context, *, row: Row, replays: dict[str, Replay]) -> dict[str, Any]:
    """Replay ``row``'s load on the main stack and py-spy every Streamer process meanwhile."""
    stack = ctx.main_stack
    key = next((k for k in replays if k in row.scenario), None)
    info: dict[str, Any] = {
        "row": {
            "scenario": row.scenario,
            "case": row.case,
            "metric": row.metric,
            "ratio": None if math.isnan(row.ratio) else round(row.ratio, 3),
        },
        "method": "py-spy record --nonblocking --rate 200 (idle threads excluded) on each Streamer process",
    }
    if key is None or stack is None:
        info["error"] = f"no replay for {row.scenario}"
        return info
    seconds = ctx.sizes.profile_seconds
    pids = {name: svc.pid for name, svc in stack.services.items() if svc.pid}
    out_dir = RESULTS / "profile" / key.replace(" ", "-")
    info["raw_dir"] = str(out_dir)
    started = asyncio.Event()
    load = asyncio.create_task(replays[key](row, seconds + 2.5, started))
    try:
        await asyncio.wait_for(started.wait(), 180)
        await asyncio.sleep(1.0)  # past the workers' warm-up
        info["processes"] = await record(pids, seconds=seconds, out_dir=out_dir)
    finally:
        await load
    return info


def chosen(ctx: Context, *, rows: Sequence[Row], force: Sequence[str]) -> list[Row]:
    """For each forced scenario: its worst row when it ran, else a row at its largest size."""
    s = ctx.sizes
    defaults = {
        "connections": Row("1 connections", str(max(s.conn_levels)), "open", "", Series()),
        "sync": Row("2 sync echo", f"{max(s.sync_levels)} clients", "p99", "ms", Series()),
        "async": Row("3 async echo", f"{min(s.async_levels)} in flight", "completed", "", Series()),
        "fanout": Row("4 fan-out", f"{s.fanout_connections} sockets", "last", "ms", Series()),
    }
    out = []
    for name in force:
        if name not in defaults:
            raise ValueError(f"cannot profile {name!r}; choose from {sorted(defaults)}")
        scenario = defaults[name].scenario
        ran = [r for r in ranked(rows) if r.scenario == scenario]
        out.append(ran[0] if ran else defaults[name])
    return out


async def run(
    ctx: Context,
    *,
    rows: Sequence[Row],
    replays: dict[str, Replay],
    top: int = 2,
    force: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Profiles of the ``top`` worst rows (distinct scenarios), worst first, or of ``force``."""
    targets = chosen(ctx, rows=rows, force=force) if force else ranked(rows)[:top]
    return [await profile_row(ctx, row=row, replays=replays) for row in targets]
