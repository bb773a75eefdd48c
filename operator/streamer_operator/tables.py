"""Make sure the shared DynamoDB tables exist, on every resync, before a handler is Ready.

The tables are shared by every handler, so one check serves them all: the first
reconcile creates what is missing (indexes, TTL, the requests stream), and after that
the tables are re-checked at most every ``recheck_seconds`` (the resync interval) — one
``DescribeTable`` (and ``DescribeTimeToLive``) per table per interval, whatever the
number of handlers. A table deleted out of band, or one that lost an index, its stream
or TTL, is put back (:func:`streamer.store.tables.repair_table`) and reported until the
next check finds it whole (``retry_seconds`` later): ``TablesReady=False`` with reason
``TableRecreated`` or ``TableRepaired`` naming the table, as for a dedicated queue's
table (``Serving`` is False meanwhile, on every handler: the shared tables are
everyone's). A failure is remembered for ``retry_seconds``, then retried, so a DynamoDB outage shows up as
``TablesReady=False`` (``EnsureFailed``) on every handler without each reconcile
hammering the service.

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

#: The first check: create what is missing, return the names created.
EnsureFn = Callable[..., Awaitable[list[str]]]
#: Every later check: ``[(table, its problems, what was done about them)]``.
CheckFn = Callable[..., Awaitable[list[tuple[str, list[str], list[str]]]]]


async def _default_ensure(*, settings: Settings) -> list[str]:
    from streamer.store.tables import ensure_tables  # imported late: aiobotocore is heavy

    return await ensure_tables(settings=settings)


async def _default_check(*, settings: Settings) -> list[tuple[str, list[str], list[str]]]:
    """Every shared table's problems, each repaired: [(table, problems, what was done)]."""
    from streamer.store.dynamo import open_client
    from streamer.store.tables import inspect_table, repair_table, table_definitions

    out: list[tuple[str, list[str], list[str]]] = []
    async with open_client("dynamodb", settings=settings) as client:
        for definition in table_definitions(settings=settings).values():
            problems = await inspect_table(client, definition)
            done = await repair_table(client, definition) if problems else []
            out.append((definition["TableName"], problems, done))
    return out


class TablesGate:
    """Ensures the tables, re-checks them every ``recheck_seconds``, retries a failure sooner."""

    def __init__(
        self,
        *,
        settings: Settings,
        manage: bool = True,
        retry_seconds: float = 15.0,
        recheck_seconds: float = 60.0,
        ensure: EnsureFn | None = None,
        check: CheckFn | None = None,
        timeout_seconds: float = 120.0,
    ) -> None:
        self.settings = settings
        self.manage = manage
        self.retry_seconds = retry_seconds
        self.recheck_seconds = recheck_seconds
        self.timeout_seconds = timeout_seconds
        self._ensure = ensure or _default_ensure
        self._check = check or _default_check
        self._result: Observation | None = None
        self._checked_at = 0.0
        self._ensured = False
        self._lock: asyncio.Lock | None = None
        self.created: list[str] = []
        self.checks = 0

    def _fresh(self) -> bool:
        if self._result is None:
            return False
        age = time.monotonic() - self._checked_at
        if not self._result.status:  # failed, or just repaired: look again soon
            return age < self.retry_seconds
        return age < self.recheck_seconds

    async def observe(self) -> Observation:
        """TablesReady as of the last check, checking (and repairing) first if that is due."""
        if not self.manage:
            return Observation(
                status=True, reason="NotManaged", message="tables are managed outside the operator"
            )
        if self._result is not None and self._fresh():
            return self._result
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._result is not None and self._fresh():
                return self._result
            try:
                self._result = await asyncio.wait_for(self._run(), self.timeout_seconds)
            except Exception as exc:  # any failure is a condition to report, never a crash
                log.warning("ensuring the DynamoDB tables failed", extra={"error": repr(exc)})
                self._result = Observation(
                    status=False, reason="EnsureFailed", message=f"{type(exc).__name__}: {exc}"[:500]
                )
            self._checked_at = time.monotonic()
            self.checks += 1
            return self._result

    async def _run(self) -> Observation:
        prefix = self.settings.table_prefix
        whole = Observation(status=True, reason="TablesExist", message=f"tables {prefix}-* are active")
        if not self._ensured:
            created = await self._ensure(settings=self.settings)
            self._ensured = True
            self.created = list(created)
            if created:
                log.info("created DynamoDB tables", extra={"tables": ",".join(created)})
            return whole
        broken = [
            (table, problems, done)
            for table, problems, done in await self._check(settings=self.settings)
            if problems
        ]
        if not broken:
            return whole
        table, problems, done = broken[0]
        log.warning(
            "a shared table was changed out of band: repaired",
            extra={"table": table, "problems": ",".join(problems), "done": ",".join(done)},
        )
        if "missing" in problems:
            return Observation(
                status=False, reason="TableRecreated", message=f"table {table} was missing: created it"
            )
        return Observation(
            status=False,
            reason="TableRepaired",
            message=(
                f"table {table} lacked {', '.join(problems)}: put back {', '.join(done) or 'nothing yet'}"
            ),
        )
