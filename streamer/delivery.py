"""Reach any WebSocket from anywhere: the connection manager router and processor share.

A connection lives on exactly one connect pod, whose gRPC address is the record's
``endpoint``. :class:`Delivery` looks that up (with a short cache, so a burst of
progress frames for one request costs one read), calls the pod's ``Connections``
service, and keeps the table honest:

- **Retries**: ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` are retried ``attempts`` times
  in all, waiting ``base_delay·2^n`` (capped at ``max_delay``), shortened by up to 50 %
  at random (:class:`streamer.retry.Backoff`). A
  retried ``Send`` after a deadline may deliver a frame twice; frames carry a
  ``request_id`` and progress a ``seq``, so clients can drop the duplicate.
- **Circuit breaker per endpoint**: ``breaker_threshold`` consecutive transient failures
  open it for ``breaker_reset`` seconds; while open, calls fail at once (no waiting on
  a dead pod for every frame). After that one trial call is let through; its failure
  re-opens the breaker, its success closes it.
- **Final frames are never dropped by the breaker**: a ``complete`` or final ``error``
  (``final=True``) is the one frame a client cannot do without, so it is always tried,
  with ``final_attempts`` retries instead of ``attempts``. A connect pod that restarted
  at the same address (its clients reconnected and resumed there) or that was merely
  slow would otherwise silently swallow results while its breaker stays open (found by
  the chaos run).
- **Stale records — only what is proven gone is removed**: ``NOT_FOUND`` from the pod
  (it answered, and does not hold the socket any more) deletes the record —
  conditionally on that endpoint, so a record rewritten meanwhile survives — and the
  connection's subscriptions. A pod that is *unreachable* (the call failed and the
  channel never got connected) proves nothing: it may be back in a moment with every
  socket still open, and deleting a live connection's subscriptions would lose its
  results for good. Its records are deleted only when their ``last_seen`` is older
  than ``stale_after`` (connect refreshes it while the socket lives; by default twice
  ``STREAMER_WS_TOUCH_SECONDS`` plus a heartbeat), in the same conditional delete, and
  their subscriptions with them. A pod that answers but fails, or one whose breaker
  is open, is not taken as proof either.
- **Broadcast to ids** (:meth:`Delivery.send_many`): records grouped by endpoint, one
  ``SendMany`` per pod, every pod in parallel with its own timeout, so one slow pod does
  not delay the rest.
- **Fan-out to a tenant or a user** (:meth:`Delivery.to_tenant`, :meth:`Delivery.to_user`):
  no connection record is read. The live connect pods are read from their directory
  (``streamer.store.pods``: one consistent ``GetItem``; a pod is listed before it
  accepts a socket) and each gets one ``SendToAudience`` — it matches its own sockets by
  the exact (tenant, user) of their verified identity — in parallel, each bounded by
  ``pod_timeout``. ``matched`` is the sum of what the pods answered: a pod that cannot be
  reached (or is too slow) counts nothing and is logged, since only it knows its sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from grpc import aio

from streamer import protocol, rpc
from streamer.api.v1 import connections_pb2, connections_pb2_grpc
from streamer.config import Settings
from streamer.metrics import counter
from streamer.retry import Backoff
from streamer.store import Store, StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")

sends_total = counter(
    "streamer_delivery_sends_total",
    "Frames sent to connections through their connect pod, by outcome (delivered, failed, gone, "
    "not_found, unreachable, breaker_open, timeout, lookup_failed).",
    ["outcome"],
)
breaker_open_total = counter(
    "streamer_delivery_breaker_open_total", "Times a connect pod's circuit breaker opened."
)
final_dropped_total = counter(
    "streamer_delivery_final_dropped_total",
    "Final frames (complete/error) not delivered to a connection whose record named a connect "
    "pod (the client learns the outcome only by $resume/$status).",
)

#: Connection ids per SendMany call (keeps each request far below the gRPC size cap).
SEND_MANY_CHUNK = 500
#: Parallel record reads/deletes of one broadcast.
LOOKUP_CONCURRENCY = 32
_MAX_CACHE_ENTRIES = 100_000


@dataclasses.dataclass
class PublishResult:
    """How a broadcast went: ``delivered + failed == matched``."""

    matched: int
    delivered: int
    failed: int


class _NotHere(Exception):
    """The pod answered NOT_FOUND: it does not hold the connection."""


#: How long a final frame's connection lookup is tried again when the store fails.
FINAL_LOOKUP_SECONDS = 30.0


class _BreakerOpen(Exception):
    """The endpoint's breaker is open; no call was made."""


class _CallFailed(Exception):
    """The call failed; ``down`` when the pod is unreachable (not merely failing)."""

    def __init__(self, code: grpc.StatusCode, *, down: bool) -> None:
        super().__init__(code.name)
        self.code = code
        self.down = down


@dataclasses.dataclass
class _Breaker:
    failures: int = 0
    open_until: float = 0.0

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def succeeded(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    def failed(self, now: float, *, threshold: int, reset: float) -> bool:
        """Count one failure; True when this failure opened the breaker."""
        self.failures += 1
        if self.failures >= threshold and now >= self.open_until:
            self.open_until = now + reset
            return True
        return False


class Delivery:
    """Send frames to connections wherever they are held (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        cache_ttl: float = 5.0,
        attempts: int = 3,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
        breaker_threshold: int = 3,
        breaker_reset: float = 10.0,
        call_timeout: float = 2.0,
        pod_timeout: float = 5.0,
        final_attempts: int = 6,
        final_pod_timeout: float = 30.0,
        stale_after: float | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.store = store
        self.settings = settings
        self.cache_ttl = cache_ttl
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.breaker_threshold = breaker_threshold
        self.breaker_reset = breaker_reset
        self.call_timeout = call_timeout
        self.pod_timeout = pod_timeout
        self.final_attempts = max(attempts, final_attempts)
        self.final_pod_timeout = max(pod_timeout, final_pod_timeout)
        #: Age of ``last_seen`` past which a record on an unreachable pod counts as gone.
        self.stale_after = (
            stale_after
            if stale_after is not None
            else 2 * settings.ws_touch_seconds + settings.ws_heartbeat_seconds
        )
        self._cache: dict[str, tuple[str, float]] = {}
        self._channels: rpc.ChannelPool[connections_pb2_grpc.ConnectionsAsyncStub] = rpc.ChannelPool(
            connections_pb2_grpc.ConnectionsStub,  # type: ignore[arg-type]  # async over an aio channel
            max_message_bytes=settings.grpc_max_message_bytes,
        )
        self._breakers: dict[str, _Breaker] = {}
        self._backoff = Backoff(base=base_delay, cap=max_delay, jitter=0.5)

    # ------------------------------------------------------------------ public API

    async def send(self, connection_id: str, message: Mapping[str, Any], *, final: bool = False) -> bool:
        """Send one message to one connection; False when it could not be delivered.

        A connection that is gone has its stale record (and subscriptions) removed.
        ``final`` marks a frame the breaker must not drop (see the module doc).
        """
        endpoint = await self._lookup(connection_id, final=final)
        if endpoint is None:
            return False
        sent = await self._send_one(connection_id, endpoint, protocol.encode_bytes(message), final=final)
        if final and not sent:
            final_dropped_total.inc()
        return sent

    async def send_many(
        self,
        connection_ids: Iterable[str],
        message: Mapping[str, Any],
        *,
        final: bool = False,
        endpoints: Mapping[str, str] | None = None,
    ) -> PublishResult:
        """Send one message to several connections (each looked up, grouped by pod).

        ``final`` marks a frame the breaker must not drop (see the module doc).
        ``endpoints`` are known pods of some of the connections (a request stores its
        owner's): those are not looked up; a pod that no longer holds one answers
        NOT_FOUND, which removes the record as a looked-up one would.
        """
        ids = list(dict.fromkeys(connection_ids))
        if not ids:
            return PublishResult(matched=0, delivered=0, failed=0)
        sem = asyncio.Semaphore(LOOKUP_CONCURRENCY)
        known = endpoints or {}

        async def find(cid: str) -> str | None:
            if known.get(cid):
                return known[cid]
            async with sem:
                return await self._lookup(cid, final=final)

        found = await asyncio.gather(*(find(cid) for cid in ids))
        groups: dict[str, list[str]] = {}
        for cid, endpoint in zip(ids, found, strict=True):
            if endpoint is not None:
                groups.setdefault(endpoint, []).append(cid)
        delivered = await self._broadcast(groups, protocol.encode_bytes(message), final=final)
        if final:
            final_dropped_total.inc(sum(len(group) for group in groups.values()) - delivered)
        return PublishResult(matched=len(ids), delivered=delivered, failed=len(ids) - delivered)

    async def to_user(self, *, tenant_id: str, user_id: str, message: Mapping[str, Any]) -> PublishResult:
        """Send to every connection of one user within one tenant (one call per connect pod)."""
        if not user_id:
            raise ValueError("user_id is required")
        return await self._to_audience(tenant_id, user_id, message)

    async def to_tenant(self, tenant_id: str, message: Mapping[str, Any]) -> PublishResult:
        """Send to every connection of one tenant (one call per connect pod)."""
        return await self._to_audience(tenant_id, "", message)

    async def disconnect(self, connection_id: str, *, code: int = 1000, reason: str = "") -> bool:
        """Close a connection wherever it is; False when it was not found (stale record removed)."""
        endpoint = await self._lookup(connection_id)
        if endpoint is None:
            return False
        request = connections_pb2.DisconnectRequest(connection_id=connection_id, code=code, reason=reason)
        try:
            response: connections_pb2.DisconnectResponse = await self._call(
                endpoint, lambda stub, t: stub.Disconnect(request, timeout=t)
            )
        except _NotHere:
            await self._stale(connection_id, endpoint)
            return False
        except _BreakerOpen:
            return False
        except _CallFailed as exc:
            if exc.down:
                await self._stale(connection_id, endpoint, proven=False)
            return False
        self._cache.pop(connection_id, None)
        return bool(response.disconnected)

    async def close(self) -> None:
        """Close every channel; the object is unusable afterwards."""
        await self._channels.close()

    # ------------------------------------------------------------------ lookups

    async def _lookup(self, connection_id: str, *, final: bool = False) -> str | None:
        """The endpoint holding ``connection_id`` (cached for ``cache_ttl``), None when gone.

        For a ``final`` frame a failed read is tried again for up to
        :data:`FINAL_LOOKUP_SECONDS`: the store not answering says nothing about the
        connection, and the frame gets no other chance.
        """
        now = time.monotonic()
        cached = self._cache.get(connection_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        give_up = now + FINAL_LOOKUP_SECONDS
        failures = 0
        while True:
            try:
                record = await self.store.connections.get(connection_id)
                break
            except StoreError:
                log.warning("connection lookup failed", exc_info=True, extra={"connection_id": connection_id})
                sends_total.labels("lookup_failed").inc()
                failures += 1
                delay = self._backoff.delay(failures)
                if not final or time.monotonic() + delay > give_up:
                    return None
                await asyncio.sleep(delay)
        if record is None:
            self._cache.pop(connection_id, None)
            sends_total.labels("gone").inc()
            return None
        self._remember(record.connection_id, record.endpoint, now)
        return record.endpoint

    def _remember(self, connection_id: str, endpoint: str, now: float) -> None:
        if len(self._cache) >= _MAX_CACHE_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= _MAX_CACHE_ENTRIES:
                self._cache.clear()
        self._cache[connection_id] = (endpoint, now + self.cache_ttl)

    # ------------------------------------------------------------------ sending

    async def _send_one(
        self, connection_id: str, endpoint: str, frame: bytes, *, final: bool = False
    ) -> bool:
        request = connections_pb2.SendRequest(connection_id=connection_id, frame=frame)
        try:
            response: connections_pb2.SendResponse = await self._call(
                endpoint, lambda stub, t: stub.Send(request, timeout=t), final=final
            )
        except _NotHere:
            sends_total.labels("not_found").inc()
            await self._stale(connection_id, endpoint)
            return False
        except _BreakerOpen:
            sends_total.labels("breaker_open").inc()
            return False
        except _CallFailed as exc:
            if exc.down:
                sends_total.labels("unreachable").inc()
                await self._stale(connection_id, endpoint, proven=False)
            else:
                sends_total.labels("failed").inc()
            return False
        sends_total.labels("delivered" if response.delivered else "failed").inc()
        return bool(response.delivered)

    async def _to_audience(self, tenant_id: str, user_id: str, message: Mapping[str, Any]) -> PublishResult:
        """``SendToAudience`` on every live connect pod, in parallel (see the module doc).

        :class:`StoreError` when the pods directory cannot be read.
        """
        if not tenant_id:
            raise ValueError("tenant_id is required")
        pods = await self.store.pods.live()
        request = connections_pb2.SendToAudienceRequest(
            tenant_id=tenant_id, user_id=user_id, frame=protocol.encode_bytes(message)
        )

        async def pod(endpoint: str) -> tuple[int, int]:
            try:
                response: connections_pb2.SendToAudienceResponse = await asyncio.wait_for(
                    self._call(endpoint, _audience_call(request)), timeout=self.pod_timeout
                )
            except (_BreakerOpen, _CallFailed, _NotHere, TimeoutError) as exc:
                log.warning(
                    "connect pod not reached for a fan-out",
                    extra={"endpoint": endpoint, "reason": type(exc).__name__},
                )
                sends_total.labels("unreachable").inc()
                return 0, 0
            sends_total.labels("delivered").inc(response.delivered)
            if response.failed:
                sends_total.labels("failed").inc(response.failed)
            return response.matched, response.delivered

        counts = await asyncio.gather(*(pod(endpoint) for endpoint in pods))
        matched = sum(m for m, _ in counts)
        delivered = sum(d for _, d in counts)
        return PublishResult(matched=matched, delivered=delivered, failed=matched - delivered)

    async def _broadcast(self, groups: Mapping[str, list[str]], frame: bytes, *, final: bool = False) -> int:
        """One SendMany per pod, pods in parallel, each bounded by ``pod_timeout``."""
        timeout = self.final_pod_timeout if final else self.pod_timeout

        async def pod(endpoint: str, ids: list[str]) -> int:
            try:
                return await asyncio.wait_for(
                    self._send_many_pod(endpoint, ids, frame, final=final), timeout=timeout
                )
            except TimeoutError:
                log.warning("connect pod too slow for a broadcast", extra={"endpoint": endpoint})
                sends_total.labels("timeout").inc(len(ids))
                return 0

        counts = await asyncio.gather(*(pod(endpoint, ids) for endpoint, ids in groups.items()))
        return sum(counts)

    async def _send_many_pod(
        self, endpoint: str, ids: list[str], frame: bytes, *, final: bool = False
    ) -> int:
        delivered = 0
        for start in range(0, len(ids), SEND_MANY_CHUNK):
            chunk = ids[start : start + SEND_MANY_CHUNK]
            request = connections_pb2.SendManyRequest(connection_ids=chunk, frame=frame)
            try:
                response: connections_pb2.SendManyResponse = await self._call(
                    endpoint, _send_many_call(request), final=final
                )
            except _BreakerOpen:
                sends_total.labels("breaker_open").inc(len(chunk))
                continue
            except (_CallFailed, _NotHere) as exc:
                if isinstance(exc, _NotHere) or exc.down:
                    sends_total.labels("unreachable").inc(len(chunk))
                    await self._stale_many(chunk, endpoint, proven=isinstance(exc, _NotHere))
                else:
                    sends_total.labels("failed").inc(len(chunk))
                continue
            delivered += len(response.delivered)
            sends_total.labels("delivered").inc(len(response.delivered))
            if response.failed:
                sends_total.labels("failed").inc(len(response.failed))
            if response.not_found:
                sends_total.labels("not_found").inc(len(response.not_found))
                await self._stale_many(list(response.not_found), endpoint)
        return delivered

    # ------------------------------------------------------------------ gRPC with retries

    async def _call(
        self, endpoint: str, call: Callable[[Any, float], Awaitable[T]], *, final: bool = False
    ) -> T:
        """``call(stub, timeout)`` with retries and the endpoint's breaker (see the module doc).

        ``final`` calls ignore an open breaker and retry ``final_attempts`` times.
        """
        breaker = self._breakers.setdefault(endpoint, _Breaker())
        attempts = self.final_attempts if final else self.attempts
        for attempt in range(attempts):
            if not final and not breaker.allows(time.monotonic()):
                raise _BreakerOpen(endpoint)
            stub = self._channels.stub(endpoint)
            try:
                result = await call(stub, self.call_timeout)
            except aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.NOT_FOUND:
                    breaker.succeeded()  # the pod answered
                    raise _NotHere(endpoint) from None
                if code not in rpc.RETRY_IN_PLACE:
                    breaker.succeeded()
                    log.warning("connect pod refused a call", extra={"endpoint": endpoint, "code": code.name})
                    raise _CallFailed(code, down=False) from None
                if breaker.failed(
                    time.monotonic(), threshold=self.breaker_threshold, reset=self.breaker_reset
                ):
                    breaker_open_total.inc()
                    log.warning("circuit breaker opened", extra={"endpoint": endpoint, "code": code.name})
                if attempt + 1 >= attempts:
                    down = not self._channels.connected(endpoint)
                    if down:
                        self._channels.evict(endpoint)
                    raise _CallFailed(code, down=down) from None
                await asyncio.sleep(self._backoff.delay(attempt + 1))
            else:
                breaker.succeeded()
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ stale records

    async def _stale(self, connection_id: str, endpoint: str, *, proven: bool = True) -> None:
        """Delete a record that points at a pod that does not hold the connection.

        ``proven``: the pod said so (NOT_FOUND). Otherwise (the pod is unreachable) only a
        record whose ``last_seen`` is older than ``stale_after`` goes, and nothing else.
        """
        self._cache.pop(connection_id, None)
        try:
            if not proven:
                seen_before = time.time() - self.stale_after
                if await self.store.connections.delete(
                    connection_id, endpoint=endpoint, seen_before=seen_before
                ):
                    await self.store.subscriptions.delete_for_connection(connection_id)
                    log.info(
                        "removed the record of a connection on an unreachable pod, unseen for long",
                        extra={"connection_id": connection_id, "endpoint": endpoint},
                    )
                return
            deleted = await self.store.connections.delete(connection_id, endpoint=endpoint)
            if deleted or await self.store.connections.get(connection_id) is None:
                await self.store.subscriptions.delete_for_connection(connection_id)
            if deleted:
                log.info(
                    "removed a stale connection record",
                    extra={"connection_id": connection_id, "endpoint": endpoint},
                )
        except StoreError:
            log.warning("could not remove a stale connection record", exc_info=True)

    async def _stale_many(self, connection_ids: Sequence[str], endpoint: str, *, proven: bool = True) -> None:
        sem = asyncio.Semaphore(LOOKUP_CONCURRENCY)

        async def one(cid: str) -> None:
            async with sem:
                await self._stale(cid, endpoint, proven=proven)

        await asyncio.gather(*(one(cid) for cid in connection_ids))


def _send_many_call(request: connections_pb2.SendManyRequest) -> Callable[[Any, float], Awaitable[Any]]:
    def call(stub: Any, timeout: float) -> Awaitable[Any]:
        return stub.SendMany(request, timeout=timeout)  # type: ignore[no-any-return]

    return call


def _audience_call(
    request: connections_pb2.SendToAudienceRequest,
) -> Callable[[Any, float], Awaitable[Any]]:
    def call(stub: Any, timeout: float) -> Awaitable[Any]:
        return stub.SendToAudience(request, timeout=timeout)  # type: ignore[no-any-return]

    return call
