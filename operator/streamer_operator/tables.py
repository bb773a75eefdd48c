"""Make sure the DynamoDB tables exist before any handler is called Ready.

The tables are shared by every handler, so they are ensured once per operator
process: the first reconcile creates what is missing (indexes, TTL, the requests
stream) and every later one reuses the answer. A failure is remembered for a short
while, then retried, so a DynamoDB outage shows up as ``TablesReady=False`` on every
handler without each reconcile hammering the service.

Tables are never deleted by the operator: they hold requests and connections of
every handler, and removing a handler must not lose anyone's data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from streamer.config import Settings
from streamer_operator.status import Observation

log = logging.getLogger(__name__)

EnsureFn = Callable[..., Awaitable[list[str]]]


async def _default_ensure(*, settings: Settings) -> list[str]:
    from streamer.store.tables import ensure_tables  # imported late: aiobotocore is heavy

    return await ensure_tables(settings=settings)


class TablesGate:
    """Ensures the tables once, caches success, retries failures after ``retry_seconds``."""

    def __init__(
        self,
        *,
        settings: Settings,
        manage: bool = True,
        retry_seconds: float = 15.0,
        ensure: EnsureFn | None = None,
        timeout_seconds: float = 120.0,
    ) -> None:
        self.settings = settings
        self.manage = manage
        self.retry_seconds = retry_seconds
        self.timeout_seconds = timeout_seconds
        self._ensure = ensure or _default_ensure
        self._result: Observation | None = None
        self._failed_at = 0.0
        self._lock: asyncio.Lock | None = None
        self.created: list[str] = []

    async def observe(self) -> Observation:
        """TablesReady as of now, ensuring the tables first if that is still to do."""
        if not self.manage:
            return Observation(
                status=True, reason="NotManaged", message="tables are managed outside the operator"
            )
        if self._result is not None and self._result.status:
            return self._result
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            recent = time.monotonic() - self._failed_at < self.retry_seconds
            if self._result is not None and (self._result.status or recent):
                return self._result
            try:
                created = await asyncio.wait_for(self._ensure(settings=self.settings), self.timeout_seconds)
            except Exception as exc:  # any failure is a condition to report, never a crash
                log.warning("ensuring the DynamoDB tables failed", extra={"error": repr(exc)})
                self._failed_at = time.monotonic()
                self._result = Observation(
                    status=False, reason="EnsureFailed", message=f"{type(exc).__name__}: {exc}"[:500]
                )
                return self._result
            self.created = list(created)
            if created:
                log.info("created DynamoDB tables", extra={"tables": ",".join(created)})
            prefix = self.settings.table_prefix
            self._result = Observation(
                status=True, reason="TablesExist", message=f"tables {prefix}-* are active"
            )
            return self._result
