"""``$ping``, ``$status``, ``$cancel``, ``$subscribe``, ``$unsubscribe`` and ``$resume``.

Every one is scoped to the caller's tenant: a request of another tenant answers
``NOT_FOUND`` exactly like one that does not exist, so ids never leak across
tenants. ``$resume`` is scoped to the caller's *user* as well (a reconnecting
client gets its own requests back, not its colleagues').
"""

from __future__ import annotations

import logging

from services.router.call import Call, Frames
from services.router.states import status_frame
from streamer.protocol import (
    CANCEL,
    INVALID_ACTION,
    NOT_FOUND,
    PING,
    RESUME,
    SERVICE_UNAVAILABLE,
    STATUS,
    SUBSCRIBE,
    SYSTEM_ACTIONS,
    VALIDATION_ERROR,
    error_message,
    pong_message,
)
from streamer.store import NotFound, RequestRecord, Store, StoreError, request_key
from streamer.store.base import now

log = logging.getLogger(__name__)

#: ``$resume`` also returns requests that ended at most this long ago.
RESUME_RECENT_SECONDS = 600.0
#: ``$resume`` looks at requests created at most this long ago (unfinished ones older
#: than this are long past any action's timeout and retries).
RESUME_LOOKBACK_SECONDS = 24 * 3600.0
#: ``$resume`` answers at most this many *finished* requests (the newest); unfinished ones all.
RESUME_MAX_REQUESTS = 100


def _not_found(call: Call, target: str) -> Frames:
    return [error_message(NOT_FOUND, f"Request {target!r} not found", request_id=target)]


def _target(call: Call) -> str | None:
    value = call.payload.get("request_id", call.payload.get("id"))
    return value if isinstance(value, str) and value else None


async def attach(store: Store, record: RequestRecord, call: Call) -> RequestRecord:
    """Subscribe ``call``'s connection to ``record``, then mark the request (and re-read it).

    The processor reads the subscribers only of a request marked ``subscribed``, and it
    learns the mark from its own final write (which returns the record); we write the
    subscription *before* the mark, and the mark's write returns the record as it is
    now: so either the processor's final write sees the mark (and then our subscription)
    and delivers the outcome here, or our mark sees the outcome and we answer with it
    (possibly both — clients drop the duplicate). Without the re-read, a request
    finishing between our first read and the subscription was reported as still running
    and its result never arrived (found by the chaos run).
    """
    await store.subscriptions.subscribe(
        request_id=record.request_id,
        connection_id=call.connection_id,
        user_id=call.user_id,
        tenant_id=call.tenant_id,
    )
    fresh = await store.requests.mark_subscribed(record.request_id)
    return fresh if fresh is not None else record


class SystemActions:
    """Answers the ``$`` actions from the store."""

    def __init__(self, *, store: Store) -> None:
        self.store = store

    async def handle(self, call: Call) -> Frames:
        if call.action == PING:
            return [pong_message()]
        if call.action not in SYSTEM_ACTIONS:
            return [
                error_message(
                    INVALID_ACTION,
                    f"Unknown system action {call.action[:64]!r}",
                    request_id=call.request_id,
                    details={"system_actions": sorted(SYSTEM_ACTIONS)},
                )
            ]
        try:
            if call.action == RESUME:
                return await self.resume(call)
            target = _target(call)
            if target is None:
                return [
                    error_message(
                        VALIDATION_ERROR,
                        f"{call.action} needs payload.request_id",
                        request_id=call.request_id,
                    )
                ]
            if call.action == STATUS:
                return await self.status(call, target)
            if call.action == CANCEL:
                return await self.cancel(call, target)
            if call.action == SUBSCRIBE:
                return await self.subscribe(call, target)
            return await self.unsubscribe(call, target)
        except StoreError as exc:
            if isinstance(exc, NotFound):
                return _not_found(call, _target(call) or call.request_id)
            log.warning("store unavailable for %s: %s", call.action, exc)
            return [
                error_message(
                    SERVICE_UNAVAILABLE,
                    "Request storage is unavailable; try again",
                    request_id=call.request_id,
                )
            ]

    async def _owned(self, call: Call, target: str) -> RequestRecord | None:
        """The request, if it exists *in the caller's tenant* (ids are scoped per tenant)."""
        record = await self.store.requests.get(request_key(call.tenant_id, target))
        if record is None or record.tenant_id != call.tenant_id:
            return None
        return record

    async def status(self, call: Call, target: str) -> Frames:
        record = await self._owned(call, target)
        if record is None:
            return _not_found(call, target)
        return [status_frame(record)]

    async def cancel(self, call: Call, target: str) -> Frames:
        """PENDING → CANCELLED at once; PROCESSING → cancel requested; terminal: unchanged."""
        try:
            record = await self.store.requests.cancel(
                request_key(call.tenant_id, target), tenant_id=call.tenant_id
            )
        except NotFound:
            return _not_found(call, target)
        log.info("cancel", extra={"target": target, "status": record.status})
        return [status_frame(record)]

    async def subscribe(self, call: Call, target: str) -> Frames:
        """Progress and outcome of ``target`` also go to this connection from now on."""
        record = await self._owned(call, target)
        if record is None:
            return _not_found(call, target)
        if not record.terminal:
            record = await attach(self.store, record, call)
        return [status_frame(record, subscribed=not record.terminal)]

    async def unsubscribe(self, call: Call, target: str) -> Frames:
        record = await self._owned(call, target)
        if record is None:
            return _not_found(call, target)
        await self.store.subscriptions.unsubscribe(
            request_id=record.request_id, connection_id=call.connection_id
        )
        return [status_frame(record, subscribed=False)]

    async def resume(self, call: Call) -> Frames:
        """After a reconnect: one ``status`` frame per unfinished or recently finished request.

        Unfinished requests sent on another connection are re-attached to this one
        (a subscription), so the processor delivers their progress and outcome here.
        No frame at all when the user has nothing to resume.
        """
        t = now()
        records = await self.store.requests.by_user(
            tenant_id=call.tenant_id, user_id=call.user_id, since=t - RESUME_LOOKBACK_SECONDS
        )
        # Every unfinished request is re-attached, however many finished ones there are;
        # only the recently finished are capped (the newest RESUME_MAX_REQUESTS), so a
        # burst of finished work never crowds out a request still running.
        unfinished = [r for r in records if not r.terminal]
        finished = [
            r for r in records if r.terminal and (r.finished_at or r.updated_at) >= t - RESUME_RECENT_SECONDS
        ][-RESUME_MAX_REQUESTS:]
        wanted = sorted([*unfinished, *finished], key=lambda r: r.created_at)
        frames: Frames = []
        for record in wanted:
            attached = False
            if not record.terminal and record.connection_id != call.connection_id:
                record = await attach(self.store, record, call)
                attached = not record.terminal
            frames.append(status_frame(record, resumed=True, subscribed=attached or None))
        return frames
