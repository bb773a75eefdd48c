"""The child side of the harness's process protocol: JSON lines out, JSON lines in.

Every process the harness starts (baseline servers, client workers) reports on
stdout one JSON object per line (``{"event": "ready", ...}``) and takes commands
on stdin the same way. A child whose stdin closes stops: if the harness dies, its
children do not outlive it. Each child also has a hard deadline of its own, so a
lost command can never leave a loop running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any


def raise_nofile() -> int:
    """Raise this process's open-files soft limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def emit(event: str, **data: Any) -> None:
    """One JSON line on stdout, flushed (the harness reads it)."""
    sys.stdout.write(json.dumps({"event": event, **data}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> asyncio.StreamReader:
    """An asyncio reader over stdin (never blocks the loop)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def next_command(reader: asyncio.StreamReader, *, timeout: float) -> dict[str, Any]:
    """The next command; ``{"cmd": "stop"}`` on EOF or when ``timeout`` passes."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        return {"cmd": "stop", "reason": "timeout"}
    if not line:
        return {"cmd": "stop", "reason": "eof"}
    try:
        value = json.loads(line)
    except ValueError:
        return {"cmd": "stop", "reason": "garbled"}
    return value if isinstance(value, dict) else {"cmd": "stop", "reason": "garbled"}


def run_child(main: Callable[[], Awaitable[None]], *, max_seconds: float) -> None:
    """Run ``main`` on uvloop, stopping on SIGTERM/SIGINT or after ``max_seconds``."""
    import uvloop

    raise_nofile()

    async def guarded() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            await asyncio.wait_for(main(), max_seconds)
        except (asyncio.CancelledError, TimeoutError):
            pass

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(guarded())
    sys.stdout.flush()
    # Skip interpreter teardown of thousands of sockets: the kernel closes them.
    os._exit(0)
