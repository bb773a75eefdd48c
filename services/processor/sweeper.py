"""The sweeper: nothing is left behind, whatever happened to the stream or a processor.

Every ``sweep_interval_seconds`` (±20 % jitter, so replicas do not sweep in
lock-step) each processor queries the status index twice:

1. **PROCESSING with ``claim_expires_at`` in the past** by more than the tolerated
   clock skew (``STREAMER_CLOCK_SKEW_SECONDS``: the owner wrote the expiry with its
   own clock) — its owner died, or could not renew for a whole claim and has
   stopped the job itself (see :mod:`services.processor.claims`). ``release_expired`` puts it back to PENDING
   at the same attempt (a crash is not the handler's failure) and the sweeper
   offers it to its own claimer at once; the release's stream record offers it
   to whichever processor reads that shard too, and the claim condition lets
   exactly one of them have it.
2. **PENDING, unchanged for ``pending_grace_seconds`` and past its
   ``not_before``** — a stream record nobody acted on: trimmed past the 24 h
   retention, read by a processor that died before claiming, a retry whose timer
   died with its processor, or a table written while no processor ran. It is
   claimed and dispatched like a stream record — as many as this processor's claim
   budget has room for (:mod:`.budget`), oldest first, reading a bounded number.

Several processors may sweep at once: the conditional updates decide, and a
loser just counts a refused claim. The index is eventually consistent, so a
sweep may see a request a moment late or already taken; both are harmless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time

from services.processor import metrics
from services.processor.claims import Claimer, candidate_from_request
from streamer.store.errors import StoreError, TransitionRefused
from streamer.store.requests import RequestRecord, RequestStore
from streamer.tasks import Background, every

log = logging.getLogger(__name__)
SWEEP_CONCURRENCY = 16
#: One sweep claims at most this many PENDING requests (fewer when this processor's
#: claim budget has less room) ...
SWEEP_MAX_CLAIMS = 256
#: ... and reads at most this many of them from the status index, in pages of SWEEP_PAGE.
SWEEP_MAX_READ = 2000
SWEEP_PAGE = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepResult:
    """What one sweep did: claims released, and requests it claimed itself."""

    released: int = 0
    claimed: int = 0


class Sweeper:
    """Periodically recovers expired claims and PENDING requests the stream path missed."""

    def __init__(
        self,
        *,
        requests: RequestStore,
        claimer: Claimer,
        interval: float,
        pending_grace: float,
        clock_skew: float = 0.0,
    ) -> None:
        self.requests = requests
        self.clock_skew = clock_skew
        self.claimer = claimer
        self.interval = interval
        self.pending_grace = pending_grace
        self.released_total = 0
        self.claimed_total = 0
        self._loop = Background("sweeper")

    async def sweep_once(self) -> SweepResult:
        now = time.time()
        sem = asyncio.Semaphore(SWEEP_CONCURRENCY)
        expired = await self.requests.expired_claims(now=now, skew=self.clock_skew)

        async def release(record: RequestRecord) -> bool:
            async with sem:
                try:
                    released = await self.requests.release_expired(
                        record.request_id,
                        owner=record.owner or "",
                        attempt=record.attempt,
                        token=record.claim_token,
                        skew=self.clock_skew,
                    )
                except TransitionRefused:
                    return False  # renewed, finished, or released by another sweeper meanwhile
                except StoreError as exc:
                    log.warning("release failed", extra={"request_id": record.request_id, "error": str(exc)})
                    return False
                metrics.SWEEPER_RECOVERED.labels("expired_claim").inc()
                log.info(
                    "released an expired claim",
                    extra={
                        "request_id": record.request_id,
                        "dead_owner": record.owner,
                        "attempt": record.attempt,
                    },
                )
                await self.claimer.offer(candidate_from_request(released, source="sweeper"))
                return True

        released = sum(await asyncio.gather(*(release(r) for r in expired)))

        # Only as many as this processor may claim, oldest first, skipping those whose lane
        # or tenant is full here (another processor's sweeper takes them), and reading a
        # bounded number: a backlog of millions costs one bounded query per sweep.
        budget = self.claimer.budget
        stale = await self.requests.stale_pending(
            unchanged_since=now - self.pending_grace,
            now=now,
            page_size=SWEEP_PAGE,
            limit=SWEEP_MAX_CLAIMS if budget is None else max(0, min(SWEEP_MAX_CLAIMS, budget.free)),
            scan_limit=SWEEP_MAX_READ,
            accept=None if budget is None else (lambda r: budget.room(r.action, r.tenant_id)),
        )

        async def claim(record: RequestRecord) -> bool:
            async with sem:
                won = await self.claimer.offer(candidate_from_request(record, source="sweeper"))
            if won:
                metrics.SWEEPER_RECOVERED.labels("pending").inc()
                log.info(
                    "claimed a PENDING request the stream path missed",
                    extra={"request_id": record.request_id},
                )
            return won

        claimed = sum(await asyncio.gather(*(claim(r) for r in stale)))
        self.released_total += released
        self.claimed_total += claimed
        return SweepResult(released=released, claimed=claimed)

    async def _round(self) -> None:
        if self.claimer.accepting:
            await self.sweep_once()

    def start(self) -> None:
        self._loop.start(
            every(lambda: self.interval * random.uniform(0.8, 1.2), self._round, what="sweep", logger=log)
        )

    async def stop(self) -> None:
        await self._loop.stop()

    def abort(self) -> None:
        self._loop.abort()
