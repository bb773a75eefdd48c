"""``$ping``, ``$status``, ``$cancel``, ``$subscribe``, ``$unsubscribe`` and ``$resume``.

Every one is scoped to the caller's tenant: a request of another tenant answers
``NOT_FOUND`` exactly like one that does not exist, so ids never leak across
tenants. ``$resume`` is scoped to the caller's *user* as well (a reconnecting
client gets its own requests back, not its colleagues').
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import time
from typing import Any

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
    KnownServerMessage,
    StatusMessage,
    encode_bytes,
    error_message,
    pong_message,
)
from streamer.store import COMPLETED, NotFound, RequestRecord, Store, StoreError, request_key
from streamer.store.base import now
from streamer.store.requests import RequestStore

log = logging.getLogger(__name__)

#: ``$resume`` also returns requests that ended at most this long ago.
RESUME_RECENT_SECONDS = 600.0
#: ``$resume`` looks at requests created at most this long ago (unfinished ones older
#: than this are long past any action's timeout and retries).
RESUME_LOOKBACK_SECONDS = 24 * 3600.0
#: ``$resume`` answers at most this many *finished* requests (the newest); unfinished ones all.
RESUME_MAX_REQUESTS = 100
#: One ``$resume`` answer carries at most this many frames (connect queues at most
#: ``STREAMER_WS_SEND_QUEUE``, 256 by default, per connection) ...
RESUME_PAGE_FRAMES = 100
#: ... and at most this many bytes (a frame alone may be larger: a result of up to
#: ``STREAMER_MAX_RESULT_BYTES``); the gRPC answer's cap is 4 MiB.
RESUME_PAGE_BYTES = 1024 * 1024
#: ... and takes at most about this long (or a third of the caller's deadline) when it has a frame.
RESUME_PAGE_SECONDS = 5.0
#: ``$resume`` pages built at once per router (see ``SystemActions.resume``) ...
RESUME_CONCURRENCY = 16
#: ... and the time a caller must have left once its turn comes (else: try again).
RESUME_MIN_SECONDS_LEFT = 1.0
#: Requests read from the store per query (small projections, never payloads or results).
RESUME_QUERY_LIMIT = 200
#: A cursor is honoured this long after the first page (then: start again).
RESUME_CURSOR_MAX_AGE_SECONDS = 600.0


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

    def __init__(self, *, store: Store, resume_concurrency: int | None = None) -> None:
        self.store = store
        #: Pages of ``$resume`` built at once: with each page at most RESUME_PAGE_BYTES (plus
        #: one result), a reconnect storm costs the router a bounded amount of memory.
        self._resume_slots = asyncio.Semaphore(resume_concurrency or RESUME_CONCURRENCY)

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

        Paged (docs/protocol.md): requests newest first, each answer at most
        :data:`RESUME_PAGE_FRAMES` frames and :data:`RESUME_PAGE_BYTES` bytes; when more
        remain, the answer's last frame carries ``resume_cursor`` and the client sends
        ``$resume`` again with ``{"cursor": ...}``. The store is read a page of
        :data:`RESUME_QUERY_LIMIT` small projections at a time (never the payloads or
        results); a finished request's result is read alone, when its frame is built.
        At most :data:`RESUME_CONCURRENCY` pages are built at once; a caller whose
        deadline ran out waiting gets ``SERVICE_UNAVAILABLE`` (retryable: the clients send
        ``$resume`` again with backoff).
        """
        entered = time.monotonic()
        async with self._resume_slots:
            waited = time.monotonic() - entered
            if call.deadline is not None and call.deadline - waited < RESUME_MIN_SECONDS_LEFT:
                return [
                    error_message(
                        SERVICE_UNAVAILABLE,
                        "Too many reconnections at once; send $resume again",
                        request_id=call.request_id,
                    )
                ]
            left = None if call.deadline is None else call.deadline - waited
            return await self._resume_page(call, left)

    async def _resume_page(self, call: Call, deadline: float | None) -> Frames:
        t = now()
        try:
            cursor = ResumeCursor.decode(call.payload.get("cursor"), now=t)
        except ValueError as exc:
            return [error_message(VALIDATION_ERROR, f"$resume: {exc}", request_id=call.request_id)]
        started = cursor.started if cursor else t
        tables = self.store.requests.tables()
        table, after = (cursor.table, cursor.after) if cursor else (0, None)
        finished = cursor.finished if cursor else 0
        page: list[StatusMessage] = []
        #: Where each frame's request is: (table, (request_id, created_at)), for the cursor.
        positions: list[tuple[int, tuple[str, float]]] = []
        size = 0
        # A page also ends early when it has taken a while (many re-attachments under a slow
        # store): the caller's deadline must never pass with the work of a page lost.
        budget = RESUME_PAGE_SECONDS if deadline is None else min(RESUME_PAGE_SECONDS, deadline / 3)
        give_up = time.monotonic() + budget
        while table < len(tables):
            store = tables[table]
            records, last = await store.resume_page(
                tenant_id=call.tenant_id,
                user_id=call.user_id,
                since=started - RESUME_LOOKBACK_SECONDS,
                finished_since=started - RESUME_RECENT_SECONDS,
                limit=RESUME_QUERY_LIMIT,
                after=after,
            )
            for brief in records:
                recent = (brief.finished_at or brief.updated_at) >= started - RESUME_RECENT_SECONDS
                if brief.terminal and (not recent or finished >= RESUME_MAX_REQUESTS):
                    continue  # only the newest RESUME_MAX_REQUESTS finished ones
                frame, record = await self._resume_frame(call, store, brief)
                encoded = len(encode_bytes(frame))
                full = len(page) >= RESUME_PAGE_FRAMES or size + encoded > RESUME_PAGE_BYTES
                if page and (full or time.monotonic() > give_up):
                    # Full: the next answer starts after the last request this one carries.
                    last_table, last_key = positions[-1]
                    page[-1]["resume_cursor"] = ResumeCursor(
                        started=started, table=last_table, after=last_key, finished=finished
                    ).encode()
                    return list[KnownServerMessage](page)
                page.append(frame)
                positions.append((table, (brief.request_id, float(brief.created_at))))
                size += encoded
                if record.terminal and brief.terminal:
                    finished += 1
            if last is None:
                table, after = table + 1, None
            else:
                after = last
        return list[KnownServerMessage](page)

    async def _resume_frame(
        self, call: Call, store: RequestStore, brief: RequestRecord
    ) -> tuple[StatusMessage, RequestRecord]:
        """The ``status`` frame of one request ``$resume`` mentions (re-attaching it if unfinished)."""
        record = brief
        attached = False
        if not brief.terminal and brief.connection_id != call.connection_id:
            record = await attach(self.store, brief, call)
            attached = not record.terminal
        if record.status == COMPLETED and record.result is None:
            record = await store.get(record.request_id) or record  # the result, read alone
        return status_frame(record, resumed=True, subscribed=attached or None), record


@dataclasses.dataclass(frozen=True)
class ResumeCursor:
    """Where the next ``$resume`` page starts: opaque to the client (base64 of JSON).

    It only positions the walk through the caller's *own* requests (the query's key is
    always the caller's tenant and user), so a forged cursor shows nothing more.
    """

    started: float  # the first page's clock: "recently finished" keeps one meaning across pages
    table: int  # index into the requests tables (the shared one, then dedicated ones)
    after: tuple[str, float] | None  # the last request the previous page carried
    finished: int  # finished requests already answered (they are capped)

    def encode(self) -> str:
        body = {"s": self.started, "t": self.table, "a": list(self.after) if self.after else None}
        body["f"] = self.finished
        return base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()

    @classmethod
    def decode(cls, raw: Any, *, now: float) -> ResumeCursor | None:
        """None without a cursor; :class:`ValueError` for one this server did not make."""
        if raw is None:
            return None
        if not isinstance(raw, str) or not raw or len(raw) > 4096:
            raise ValueError("payload.cursor must be a resume_cursor this server sent")
        try:
            body = json.loads(base64.urlsafe_b64decode(raw.encode()))
            started, table, after, finished = body["s"], body["t"], body["a"], body["f"]
            numbers = (started, table, finished)
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
                raise TypeError
            if after is not None:
                rid, created = after
                if not isinstance(rid, str) or not rid or not isinstance(created, int | float):
                    raise TypeError
                after = (rid, float(created))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError("payload.cursor must be a resume_cursor this server sent") from exc
        if not now - RESUME_CURSOR_MAX_AGE_SECONDS <= started <= now + 60:
            raise ValueError("payload.cursor has expired; send $resume without a cursor")
        return cls(
            started=float(started), table=max(0, int(table)), after=after, finished=max(0, int(finished))
        )
