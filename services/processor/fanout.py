"""Who hears about a request: the connection that sent it and every subscriber.

Progress, ``complete`` and ``error`` frames go to the request's ``connection_id``
and to each connection subscribed to it (``$subscribe``), in one
:meth:`~streamer.delivery.Delivery.send_many` — grouped by connect pod, one gRPC
call per pod. The owner's pod is the one stored on the request
(``connection_endpoint``, from connect through the router), so it costs no read.
The subscriber list is read from the subscriptions table only for a
request marked ``subscribed`` (``$subscribe`` marks it after writing the
subscription), and cached for ``cache_seconds`` per request, so a burst of progress
frames costs one query and a request nobody subscribed to costs none. The processor
learns the mark from the records its own writes return (claim, renew, progress,
final write) and from the stream when it reads the request's shard, so a connection
that subscribes mid-run hears from a frame shortly after (at the latest the next
claim renewal); the terminal frame always re-reads the list when marked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from streamer.protocol import CompleteMessage, ErrorMessage, ProgressMessage
from streamer.retry import Backoff
from streamer.store.errors import StoreError
from streamer.store.requests import RequestRecord
from streamer.store.subscriptions import SubscriptionStore

log = logging.getLogger(__name__)

#: How long the subscribers of a request are read again for its final frame when the
#: store fails (with this backoff between tries).
FINAL_LOOKUP_SECONDS = 30.0
FINAL_LOOKUP_BACKOFF = Backoff(base=0.25, cap=4.0)


class Sender(Protocol):
    """What the processor needs of :class:`streamer.delivery.Delivery`."""

    async def send_many(
        self,
        connection_ids: Iterable[str],
        message: Mapping[str, Any],
        *,
        final: bool = False,
        endpoints: Mapping[str, str] | None = None,
    ) -> Any: ...


class Fanout:
    """Publishes a request's frames to its connection and subscribers."""

    def __init__(
        self, *, sender: Sender, subscriptions: SubscriptionStore, cache_seconds: float = 1.0
    ) -> None:
        self.sender = sender
        self.subscriptions = subscriptions
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def recipients(self, record: RequestRecord, *, fresh: bool = False) -> list[str]:
        """The connection ids to reach: the owner's first, then subscribers (no duplicates)."""
        ids = [record.connection_id] if record.connection_id else []
        if not record.subscribed:
            return ids
        now = time.monotonic()
        cached = None if fresh else self._cache.get(record.request_id)
        if cached is not None and cached[0] > now:
            subscribers = cached[1]
        else:
            found = await self._subscribers(record, final=fresh)
            subscribers = found if found is not None else (cached[1] if cached else [])
            self._cache[record.request_id] = (now + self.cache_seconds, subscribers)
        return list(dict.fromkeys([*ids, *subscribers]))

    async def _subscribers(self, record: RequestRecord, *, final: bool) -> list[str] | None:
        """The subscribed connections of the request's tenant; None when the store did not answer.

        For the ``final`` frame the read is tried again for up to
        :data:`FINAL_LOOKUP_SECONDS`: a subscriber is typically the client's *new*
        connection after a reconnect and ``$resume``, and it gets no other chance to hear
        the outcome (its socket is alive, so it will not resume again).
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + FINAL_LOOKUP_SECONDS
        failures = 0
        while True:
            try:
                subs = await self.subscriptions.for_request(record.request_id)
                return [s.connection_id for s in subs if s.tenant_id == record.tenant_id]
            except StoreError as exc:
                failures += 1
                delay = FINAL_LOOKUP_BACKOFF.delay(failures)
                if not final or loop.time() + delay > give_up:
                    log.warning(
                        "subscriber lookup failed", extra={"request_id": record.request_id, "error": str(exc)}
                    )
                    return None
                await asyncio.sleep(delay)

    async def publish(
        self,
        record: RequestRecord,
        message: ProgressMessage | CompleteMessage | ErrorMessage,
        *,
        final: bool = False,
    ) -> bool:
        """Send ``message``; True when at least one connection got it.

        ``final`` (complete/error) re-reads the subscribers and forgets the cache entry.
        """
        ids = await self.recipients(record, fresh=final)
        if final:
            self._cache.pop(record.request_id, None)
        if not ids:
            return False
        try:
            known = (
                {record.connection_id: record.connection_endpoint}
                if record.connection_id and record.connection_endpoint
                else None
            )
            result = await self.sender.send_many(ids, message, final=final, endpoints=known)
        except Exception:
            log.exception("delivery failed", extra={"request_id": record.request_id})
            return False
        delivered = getattr(result, "delivered", result)
        return bool(delivered)

    def forget(self, request_id: str) -> None:
        self._cache.pop(request_id, None)
