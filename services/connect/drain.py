"""Draining a connect pod: every socket closed with 1001 and its own moment to come back.

Each close reason carries a reconnect hint (``reconnect_after_ms=N``, N random over
``open sockets / STREAMER_WS_RECONNECT_RATE`` seconds, at most
``STREAMER_WS_RECONNECT_MAX_SECONDS``): clients that honour it come back to the
remaining pods spread out rather than in one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any

from services.connect.session import ClientConnection
from services.connect.upgrade import SHUTDOWN_REASON
from streamer import protocol

log = logging.getLogger(__name__)


def reconnect_window(connections: int, *, rate: float, cap: float) -> float:
    """Seconds over which ``connections`` drained sockets should come back (0: no hint)."""
    if rate <= 0 or connections <= 0:
        return 0.0
    return min(cap, connections / rate)


def drain_budget(drain_seconds: float) -> float:
    """Most of the grace period for closing sockets; the rest for stopping servers."""
    return max(0.1, drain_seconds - min(2.0, drain_seconds * 0.25))


async def close_sockets(
    sockets: Collection[ClientConnection],
    *,
    handlers: Iterable[asyncio.Task[Any]],
    leftovers: Callable[[], Collection[str]],
    forget: Callable[[str], Awaitable[None]],
    rate: float,
    cap: float,
    deadline: float,
) -> None:
    """Close ``sockets`` (1001, flushing), wait for their ``handlers`` to end, then delete the
    records of whatever is left (``leftovers()``) with ``forget``, all by ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    budget = max(0.0, deadline - loop.time())
    window = reconnect_window(len(sockets), rate=rate, cap=cap)
    log.info(
        "draining",
        extra={
            "connections": len(sockets),
            "budget_seconds": round(budget, 3),
            "reconnect_window_seconds": round(window, 3),
        },
    )
    for conn in sockets:
        # Each client is told its own moment to come back, spread over the window, so
        # the pods that remain see the drained sockets arrive at `rate`, not at once.
        reason = protocol.drain_close_reason(SHUTDOWN_REASON, reconnect_after=random.uniform(0, window))
        conn.close(code=protocol.CLOSE_GOING_AWAY, reason=reason, why="shutdown", flush=True)
    running = [t for t in handlers if not t.done()]
    if running:
        # Keep a slice of the budget for deleting whatever is left.
        wait = max(0.0, (deadline - loop.time()) * 0.8)
        _, pending = await asyncio.wait(running, timeout=wait)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()) / 2)
    left = list(leftovers())
    if left:
        log.warning("deleting records of connections not closed in time", extra={"count": len(left)})
        remaining = max(0.1, deadline - loop.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(forget(cid) for cid in left), return_exceptions=True), timeout=remaining
            )
