"""Which processors are alive, and this one's share of every handler's concurrency limit.

A handler's ``concurrency`` is a limit for the whole cluster, but each processor runs its
own bulkheads (:mod:`.dispatch`). Rather than a DynamoDB counter per request (two extra
writes per request and one hot item per handler), each processor takes a *share*: every
``lease_seconds / 3`` it writes a heartbeat item into the leases table and reads who else
is alive (one put and one small consistent scan per processor per round, nothing per
request); with ``n`` live processors and its place ``r`` among them (sorted ids, rotated
per handler so the remainders spread), it runs at most ``limit // n`` requests of that
handler, plus one when ``r < limit % n``. The shares add up to exactly the limit.

Limits of the scheme, stated in docs/architecture.md: a share never drops below 1 (a limit
smaller than the number of processors is exceeded, up to one per processor — give such a
handler a dedicated queue with fewer processors); after a processor joins, the others see
it within one round, so the sum can exceed the limit by the newcomer's share for that long;
a processor that dies without leaving keeps its share reserved until its heartbeat expires
(the cluster runs *below* the limit meanwhile, never above).
"""

from __future__ import annotations

import contextlib
import logging
import zlib

from services.processor import metrics
from streamer.store.errors import StoreError
from streamer.store.leases import LeaseStore
from streamer.tasks import Background, every

log = logging.getLogger(__name__)


def share_of(limit: int, *, rank: int, members: int) -> int:
    """Processor ``rank`` of ``members``' part of a cluster-wide ``limit`` (never below 1)."""
    if members <= 1:
        return limit
    base, extra = divmod(limit, members)
    return max(1, base + (1 if rank < extra else 0))


class Membership:
    """This processor's heartbeat and its view of the live processors."""

    def __init__(
        self, *, leases: LeaseStore, worker_id: str, lease_seconds: float, enabled: bool = True
    ) -> None:
        self.leases = leases
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.enabled = enabled
        self.live: list[str] = [worker_id]
        self._loop = Background(f"membership-{worker_id}")

    @property
    def members(self) -> int:
        return len(self.live)

    def share(self, limit: int, lane: str) -> int:
        """This processor's part of ``lane``'s ``limit`` (the whole limit when scope is per processor)."""
        if not self.enabled:
            return limit
        rank = self.live.index(self.worker_id) if self.worker_id in self.live else 0
        rotated = (rank + zlib.crc32(lane.encode())) % self.members
        return share_of(limit, rank=rotated, members=self.members)

    async def beat(self) -> None:
        """One round: heartbeat, then read who is alive."""
        await self.leases.beat(self.worker_id, duration=self.lease_seconds)
        live = await self.leases.members()
        if self.worker_id not in live:
            live = sorted([*live, self.worker_id])
        if live != self.live:
            log.info("processors changed", extra={"members": len(live), "worker_id": self.worker_id})
        self.live = live
        metrics.MEMBERS.set(len(live))

    async def start(self) -> None:
        if not self.enabled:
            return
        with contextlib.suppress(StoreError):
            await self.beat()
        self._loop.start(every(self.lease_seconds / 3, self.beat, what="membership heartbeat", logger=log))

    async def stop(self, *, leave: bool = True) -> None:
        await self._loop.stop()
        if leave and self.enabled:
            with contextlib.suppress(StoreError):
                await self.leases.leave(self.worker_id)
