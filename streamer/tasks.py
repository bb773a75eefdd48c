"""Supervised background tasks: the one way a component starts, stops and cancels its loops.

- :class:`Background` — a component's one long-running task: ``start`` once,
  ``stop`` cancels it and waits until it is gone, ``abort`` only cancels (a crash, in tests).
- :func:`every` — the body of a periodic loop: pause, run one round, log a failed
  round and carry on (a round's failure never ends the loop).
- :class:`TaskSet` — short fire-and-forget tasks kept referenced until they end,
  cancelled or awaited together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

log = logging.getLogger(__name__)


class Background:
    """One named background task owned by a component."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self.running:
            coro.close()
            raise RuntimeError(f"{self.name} is already running")
        self._task = asyncio.create_task(coro, name=self.name)

    def abort(self) -> None:
        """Cancel without waiting."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel and wait until the task is gone (its own cancellation is not an error)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def join(self) -> None:
        """Wait for the task to end by itself."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def every(
    interval: float | Callable[[], float],
    round_: Callable[[], Awaitable[Any]],
    *,
    what: str,
    logger: logging.Logger = log,
) -> NoReturn:
    """Forever: wait ``interval`` (a number, or a function for jitter), then run one round.

    A round that raises is logged (``"<what> failed"``) and the loop goes on.
    """
    while True:
        await asyncio.sleep(interval() if callable(interval) else interval)
        try:
            await round_()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s failed", what)


class TaskSet:
    """Short tasks started and forgotten, kept referenced until they end."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Any:
        return iter(list(self._tasks))

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def drain(self, timeout: float) -> None:
        """Let the tasks finish for up to ``timeout`` seconds, then cancel the rest and wait for them."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        self.cancel()
        await self.wait()

    async def wait(self) -> None:
        """Wait for every task (failures and cancellations are not raised)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["Background", "TaskSet", "every"]
