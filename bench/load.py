"""Driving client workers from the harness: spread, start, go together, collect."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Sequence
from typing import Any

from bench.procs import Child, stop_all

_names = itertools.count(1)


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as possible (no zero parts)."""
    parts = max(1, min(parts, total))
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


async def start_workers(kind: str, specs: Sequence[dict[str, Any]], *, label: str) -> list[Child]:
    """Start one worker per spec and wait until each says ``ready`` (connected)."""
    children = await asyncio.gather(
        *(
            Child.start(
                name=f"{label}-{kind}-{next(_names)}",
                module="bench.workers",
                args=[kind, json.dumps(spec)],
            )
            for spec in specs
        )
    )
    try:
        timeout = max(float(s.get("ready_timeout", 60.0)) for s in specs)
        await asyncio.gather(*(c.expect("ready", timeout=timeout) for c in children))
    except BaseException:
        await stop_all(children)
        raise
    return list(children)


async def go_and_collect(
    children: Sequence[Child], *, event: str, timeout: float, started: asyncio.Event | None = None
) -> list[dict[str, Any]]:
    """Send ``go`` to every worker at once (then set ``started``) and gather their ``event`` reports."""
    await asyncio.gather(*(c.send("go") for c in children))
    if started is not None:
        started.set()
    return list(await asyncio.gather(*(c.expect(event, timeout=timeout) for c in children)))


async def run_load(
    kind: str,
    specs: Sequence[dict[str, Any]],
    *,
    label: str,
    timeout: float,
    started: asyncio.Event | None = None,
) -> list[dict[str, Any]]:
    """Start workers, run them together, return their ``done`` reports, stop them."""
    children = await start_workers(kind, specs, label=label)
    try:
        return await go_and_collect(children, event="done", timeout=timeout, started=started)
    finally:
        await stop_all(children)


def merged(reports: Sequence[dict[str, Any]], key: str) -> list[float]:
    out: list[float] = []
    for r in reports:
        out.extend(r.get(key, []))
    return out


def errors(reports: Sequence[dict[str, Any]]) -> tuple[int, list[str]]:
    count = sum(int(r.get("errors", 0)) for r in reports)
    samples = [s for r in reports for s in r.get("error_samples", [])][:3]
    return count, samples
