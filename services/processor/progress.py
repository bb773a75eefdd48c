"""Per-request progress: numbered, rate-limited, coalesced, persisted.

A handler may report progress as often as it likes; clients get at most one
progress frame per ``interval`` (``STREAMER_PROGRESS_INTERVAL_SECONDS``, 0.1 s by
default) per request:

* **The first report goes out at once** — the client learns the work started.
* **Then at most one frame per interval; the latest wins.** A report that arrives
  while the previous one is still waiting replaces it (counted as ``coalesced``);
  the waiting one is sent when the interval is up.
* **The final one always goes out**: a 100 % report is sent at once, and
  :meth:`ProgressReporter.close` flushes whatever is waiting before the caller
  sends ``complete``/``error`` — so the last frame before the end is the latest
  progress, never a stale one.
* ``seq`` counts the frames actually sent, from ``start_seq + 1`` — strictly
  increasing without gaps, and since one task sends them in order, every
  recipient sees them in that order. A retry or hand-back continues from the
  saved ``seq``, and an attempt after a crash jumps ahead of it (see
  :func:`~services.processor.invoke.start_seq`), so a client's numbers never go
  backwards across attempts.

Handler reads never wait for delivery: :meth:`report` only records the latest
event and wakes the sender task, so a slow connect pod slows the frames, not the
handler. The latest progress is also written to the request (``save_progress``)
so ``$status`` and ``$resume`` can answer without the processor: at most once per
``persist_interval`` (1 s), never sooner than that after the first frame, always the
latest frame sent, at most that stale, by one task of its own (frames never wait for
the write, and two writes of one request never race). A request that ends within its
first ``persist_interval`` therefore costs no progress write at all — the final value
rides on ``complete``/``fail``, which is most short requests (issue 12: DynamoDB writes
per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from services.processor import metrics
from streamer.protocol import ProgressMessage, progress_message
from streamer.tasks import Background

log = logging.getLogger(__name__)

Publish = Callable[[ProgressMessage], Awaitable[bool]]
Persist = Callable[[dict[str, Any]], Awaitable[None]]
PERSIST_INTERVAL_SECONDS = 1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Update:
    percentage: float
    message: str
    details: Mapping[str, Any] | None = None

    @property
    def final(self) -> bool:
        return self.percentage >= 100


class ProgressReporter:
    """Turns one request's progress events into frames (see the module docstring)."""

    def __init__(
        self,
        *,
        request_id: str,
        publish: Publish,
        persist: Persist | None = None,
        interval: float = 0.1,
        persist_interval: float = PERSIST_INTERVAL_SECONDS,
        start_seq: int = 0,
        created_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.request_id = request_id
        self.publish = publish
        self.persist = persist
        self.interval = interval
        self.persist_interval = persist_interval
        self.seq = start_seq
        self.clock = clock
        #: When the request was accepted; its first frame (``seq`` 1) is timed from it.
        self.created_at = created_at
        self.sent = 0
        self.coalesced = 0
        self.failed = 0
        #: The last progress sent, as persisted on the request (``seq`` included).
        self.last: dict[str, Any] | None = None
        self._pending: Update | None = None
        self._first: Update | None = None
        self._reported = False
        self._last_sent_at: float | None = None
        self._persist_due: float | None = None
        self._dirty = False
        self._persisting = Background(f"progress-persist-{request_id}")
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._closing = False
        self._sending = Background(f"progress-{request_id}")

    def report(self, percentage: float, message: str = "", details: Mapping[str, Any] | None = None) -> None:
        """Record a progress event (never blocks)."""
        if self._closing:
            return
        update = Update(percentage=float(percentage), message=message, details=details)
        if not self._reported:
            # The very first event is never coalesced, even in a burst that arrives
            # before the sender task first runs.
            self._reported = True
            self._first = update
        else:
            if self._pending is not None:
                self.coalesced += 1
                metrics.PROGRESS_UPDATES.labels("coalesced").inc()
            self._pending = update
        if update.final:
            self._urgent.set()
        self._wake.set()
        if not self._sending.running:
            self._sending.start(self._sender())

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._first is not None:
                first, self._first = self._first, None
                await self._send(first)
            while self._pending is not None:
                update = self._pending
                if not (self._last_sent_at is None or update.final or self._closing):
                    delay = self._last_sent_at + self.interval - self.clock()
                    if delay > 0:
                        self._urgent.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._urgent.wait(), timeout=delay)
                        continue  # the pending update may have been replaced meanwhile
                self._pending = None
                await self._send(update)
            if self._closing:
                return

    async def _send(self, update: Update) -> None:
        self.seq += 1
        at = time.time()
        if self.seq == 1 and self.created_at is not None:
            metrics.FIRST_PROGRESS.observe(max(0.0, at - self.created_at))
        self._last_sent_at = self.clock()
        frame = progress_message(
            self.request_id,
            percentage=update.percentage,
            message=update.message,
            seq=self.seq,
            metadata=update.details,
            at=at,
        )
        progress: dict[str, Any] = {
            "percentage": frame["percentage"],
            "message": update.message,
            "seq": self.seq,
            "timestamp": frame["timestamp"],
        }
        if update.details:
            progress["details"] = dict(update.details)
        self.last = progress
        try:
            ok = await self.publish(frame)
        except Exception:
            log.exception("progress delivery failed", extra={"request_id": self.request_id})
            ok = False
        self.sent += 1
        if ok:
            metrics.PROGRESS_UPDATES.labels("sent").inc()
        else:
            self.failed += 1
            metrics.PROGRESS_UPDATES.labels("failed").inc()
        await self._maybe_persist(progress)

    async def _maybe_persist(self, progress: dict[str, Any]) -> None:
        """Mark the latest frame for the persist task (started by the first frame)."""
        if self.persist is None or self._closing:
            return  # the final value is written by complete()/retry()
        self._dirty = True
        if self._persist_due is None:
            self._persist_due = self.clock() + self.persist_interval
        if not self._persisting.running:
            self._persisting.start(self._persister())

    async def _persister(self) -> None:
        """Write the latest frame once per interval while frames keep coming."""
        assert self.persist is not None
        while self._dirty and not self._closing:
            assert self._persist_due is not None
            delay = self._persist_due - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # re-check: closed meanwhile, or the due time moved
            if self.last is None:
                return
            self._dirty = False
            self._persist_due = self.clock() + self.persist_interval
            try:
                await self.persist(self.last)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                extra = {"request_id": self.request_id, "error": str(exc)}
                log.warning("progress not persisted", extra=extra)

    async def close(self, *, flush: bool = True) -> dict[str, Any] | None:
        """Stop taking reports; send the waiting one (unless ``flush`` is False); return the last sent."""
        self._closing = True
        # The final value rides on the terminal write; a progress write still in flight
        # is cancelled (it is conditioned on our claim, like every owned update).
        await self._persisting.stop()
        if not flush:
            self._pending = self._first = None
            await self._sending.stop()
            return self.last
        self._urgent.set()
        self._wake.set()
        await self._sending.join()
        return self.last
