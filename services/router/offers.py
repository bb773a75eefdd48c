"""Direct dispatch: offer each new async request to a processor right after storing it.

The request is already durable (the conditional create wrote it PENDING with
``offer_until``), so an offer is a shortcut, not a hand-over of responsibility: if
it is lost, refused or its processor dies, the stream reader claims the request
once ``offer_until`` has passed, and the sweeper after that. Offers therefore run
in the background — the client's ``acknowledgment`` never waits for one.

Which processors: ``STREAMER_PROCESSOR_ADDRESSES``, a list of ``host:port`` (or
``dns://server/host:port``, see :mod:`streamer.resolver`). A name may resolve to
several addresses — in the cluster it is the processors' headless Service, whose DNS
name answers with every ready pod's IP — so names are re-resolved every
:data:`RESOLVE_SECONDS` and each address is one replica. The local stack lists every
processor's port, or, with replicas behind names, the DNS stub's name for them.

Which replica: power of two choices on the load each processor reported in its
last answer (running + queued, over its capacity); a replica that failed is
skipped for :data:`DOWN_SECONDS`. A refusal (``SATURATED``, ``DRAINING``) or an
error moves on to the other choice; at most :data:`MAX_TRIES` replicas are asked.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import grpc
from grpc import aio

from streamer import resolver, rpc
from streamer.api.v1 import processor_pb2, processor_pb2_grpc
from streamer.config import Settings
from streamer.metrics import counter
from streamer.store import RequestRecord
from streamer.tasks import Background, TaskSet

log = logging.getLogger(__name__)

RESOLVE_SECONDS = 5.0
DOWN_SECONDS = 2.0
MAX_TRIES = 2
_Outcome = processor_pb2.OfferResponse.Outcome

OFFERS = counter(
    "streamer_router_offers_total",
    "Direct-dispatch offers to processors, by outcome: accepted, saturated, draining, not_claimed, "
    "error (no answer), unplaced (no processor took it: the stream takes it after the offer grace).",
    ["outcome"],
)


class _Replica:
    __slots__ = ("down_until", "load", "target")

    def __init__(self, target: str) -> None:
        self.target = target
        self.load = 0.0
        self.down_until = 0.0


class Offers:
    """The router's side of ``Processor.Offer`` (see the module docstring)."""

    def __init__(self, *, settings: Settings, addresses: tuple[str, ...] | None = None) -> None:
        self.settings = settings
        self.addresses = tuple(settings.processor_addresses if addresses is None else addresses)
        self.grace = settings.offer_grace_seconds
        self.timeout = min(1.0, self.grace / 2)
        self.replicas: dict[str, _Replica] = {}
        self.channels: rpc.ChannelPool[processor_pb2_grpc.ProcessorAsyncStub] = rpc.ChannelPool(
            processor_pb2_grpc.ProcessorStub,  # type: ignore[arg-type]  # async over an aio channel
            max_message_bytes=settings.grpc_max_message_bytes,
        )
        self._tasks = TaskSet()
        self._resolver = Background("resolve-processors")
        self._resolved_at = float("-inf")
        self._parsed = [resolver.parse(address) for address in self.addresses]  # fail at start if malformed

    @property
    def enabled(self) -> bool:
        return bool(self.addresses)

    # ------------------------------------------------------------------ replicas

    async def _resolve(self) -> None:
        targets: set[str] = set()
        for address, parsed in zip(self.addresses, self._parsed, strict=True):
            try:
                targets.update(await resolver.resolve(parsed))
            except OSError as exc:
                log.warning(
                    "processor address does not resolve", extra={"address": address, "error": str(exc)}
                )
                targets.update(t for t in self.replicas if t.endswith(f":{parsed.port}"))  # keep what we had
        for target in targets - set(self.replicas):
            self.replicas[target] = _Replica(target)
        for target in set(self.replicas) - targets:
            del self.replicas[target]
            self.channels.evict(target)
        self._resolved_at = time.monotonic()

    def _maybe_resolve(self) -> None:
        if time.monotonic() - self._resolved_at < RESOLVE_SECONDS:
            return
        if not self._resolver.running:
            self._resolver.start(self._resolve())

    def _choices(self) -> list[_Replica]:
        now = time.monotonic()
        up = [r for r in self.replicas.values() if r.down_until <= now] or list(self.replicas.values())
        if len(up) <= MAX_TRIES:
            return sorted(up, key=lambda r: r.load)
        return sorted(random.sample(up, MAX_TRIES), key=lambda r: r.load)

    # ------------------------------------------------------------------ offering

    def submit(self, record: RequestRecord) -> None:
        """Offer ``record`` in the background (the caller answers the client meanwhile)."""
        if not self.enabled:
            return
        self._tasks.spawn(self.offer(record), name=f"offer-{record.request_id}")

    async def offer(self, record: RequestRecord) -> bool:
        """Offer until a replica accepts (at most :data:`MAX_TRIES`); True when one did."""
        if not self.replicas:
            await self._resolve()
        else:
            self._maybe_resolve()
        request = processor_pb2.OfferRequest(
            request_id=record.request_id,
            attempt=record.attempt,
            action=record.action,
            tenant_id=record.tenant_id,
        )
        for replica in self._choices():
            try:
                answer = await self.channels.stub(replica.target).Offer(request, timeout=self.timeout)
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, aio.AioRpcError) else None
                log.info(
                    "offer failed",
                    extra={"request_id": record.request_id, "target": replica.target, "grpc_code": str(code)},
                )
                replica.down_until = time.monotonic() + DOWN_SECONDS
                OFFERS.labels("error").inc()
                continue
            except asyncio.CancelledError:
                raise
            if answer.capacity > 0:
                replica.load = answer.load / answer.capacity
            replica.down_until = 0.0
            OFFERS.labels(_Outcome.Name(answer.outcome).lower()).inc()
            if answer.accepted:
                return True
            if answer.outcome == _Outcome.NOT_CLAIMED:
                return False  # someone else holds it already, or the store erred: the stream decides
        OFFERS.labels("unplaced").inc()
        return False

    async def close(self) -> None:
        await self._tasks.drain(self.timeout)
        await self._resolver.stop()
        self.replicas = {}
        await self.channels.close()
