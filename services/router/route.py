"""``Route``: find the action, check the caller and the payload, then run or queue it.

Order of checks (each answers with an ``error`` frame carrying the request id):
unknown action → ``INVALID_ACTION``; missing permission → ``FORBIDDEN``; payload
failing the registry's schema → ``VALIDATION_ERROR`` with the failing paths. Then:

- **sync** (``mode: sync``, or ``auto`` with ``estimatedDuration`` ≤ the threshold):
  invoke the handler with the action's timeout and answer ``response`` or ``error``.
- **async**: ask the handler's ``Validate`` for the rules beyond the schema (skipped
  when it cannot answer within 1 s), write the request ``PENDING`` with a
  conditional put, and answer ``acknowledgment``.

Idempotency. An async request id is a DynamoDB key: re-sent by the same user, the
request's current state comes back (``status`` while it runs, ``complete`` or
``error`` once it ended), and a request still running is re-attached to the
connection it was re-sent on; sent by anyone else → ``DUPLICATE_REQUEST``. Sync
requests are not stored: each router replica remembers the answers it gave for
:data:`SYNC_REPLAY_SECONDS` (non-retryable answers only, up to
:data:`SYNC_REPLAY_MAX_ENTRIES` of at most :data:`SYNC_REPLAY_MAX_FRAME_BYTES`, and at most
:data:`SYNC_REPLAY_MAX_BYTES` together), and
a re-send that arrives while the first is still running waits for the same answer.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time

from services.router.call import Call, RouteContext
from services.router.middleware import Frames, Next, authorize, chain, observe
from services.router.offers import Offers
from services.router.states import outcome_frame
from services.router.system_actions import SystemActions, attach
from streamer.config import Settings
from streamer.handler_client import Failure, HandlerClient, Invocation, Result
from streamer.protocol import (
    DUPLICATE_REQUEST,
    INVALID_ACTION,
    SERVICE_UNAVAILABLE,
    VALIDATION_ERROR,
    ErrorMessage,
    KnownServerMessage,
    acknowledgment_message,
    encode_bytes,
    error_message,
    response_message,
)
from streamer.registry import ActionSpec, Registry
from streamer.schema import payload_errors
from streamer.store import AlreadyExists, RequestRecord, Store, StoreError, request_key

log = logging.getLogger(__name__)

SYNC_REPLAY_SECONDS = 300.0
SYNC_REPLAY_MAX_ENTRIES = 10_000
SYNC_REPLAY_MAX_FRAME_BYTES = 64 * 1024
#: All remembered answers together (10,000 x 64 KiB would be 640 MB): the oldest go first.
SYNC_REPLAY_MAX_BYTES = 32 * 1024 * 1024
#: Clients may set ``metadata.priority`` within this range (higher runs first).
PRIORITY_RANGE = (0, 10)
#: The longest the router waits for a handler's Validate answer before queuing an
#: async request anyway (the processor validates again when it invokes).
VALIDATE_DEADLINE_SECONDS = 1.0


def _duplicate(call: Call) -> ErrorMessage:
    return error_message(
        DUPLICATE_REQUEST,
        f"Request id {call.request_id!r} is already in use; send a new id",
        request_id=call.request_id,
    )


@dataclasses.dataclass
class _Replay:
    owner: tuple[str, str]
    frame: KnownServerMessage
    expires: float
    size: int = 0


class SyncReplay:
    """This replica's memory of recent sync answers, by (tenant, request id) (see the module doc)."""

    def __init__(
        self,
        *,
        ttl: float = SYNC_REPLAY_SECONDS,
        max_entries: int = SYNC_REPLAY_MAX_ENTRIES,
        max_frame_bytes: int = SYNC_REPLAY_MAX_FRAME_BYTES,
        max_bytes: int = SYNC_REPLAY_MAX_BYTES,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.max_frame_bytes = max_frame_bytes
        self.max_bytes = max_bytes
        self.bytes = 0  # encoded size of every remembered answer
        self._done: collections.OrderedDict[str, _Replay] = collections.OrderedDict()
        self._running: dict[str, tuple[tuple[str, str], asyncio.Future[KnownServerMessage | None]]] = {}

    def __len__(self) -> int:
        return len(self._done)

    def _lookup(self, key: str, at: float) -> _Replay | None:
        entry = self._done.get(key)
        if entry is not None and entry.expires <= at:
            self._drop(key)
            return None
        return entry

    def _drop(self, key: str | None = None) -> None:
        """Forget ``key`` (the oldest answer when None), keeping the byte count right."""
        if key is None:
            _, entry = self._done.popitem(last=False)
        else:
            entry = self._done.pop(key)
        self.bytes -= entry.size

    def _keep(self, key: str, owner: tuple[str, str], frame: KnownServerMessage, at: float) -> None:
        if frame["type"] == "error" and frame["error"].get("retryable"):
            return  # a retryable failure must be retried by a re-send, not replayed
        size = len(encode_bytes(frame))
        if size > self.max_frame_bytes:
            return
        if key in self._done:
            self._drop(key)
        self._done[key] = _Replay(owner=owner, frame=frame, expires=at + self.ttl, size=size)
        self.bytes += size
        while len(self._done) > self.max_entries or self.bytes > self.max_bytes:
            self._drop()
        while self._done:  # drop expired entries from the old end
            oldest = next(iter(self._done.values()))
            if oldest.expires > at:
                break
            self._drop()

    async def run(self, call: Call, answer: Next, ctx: RouteContext) -> KnownServerMessage:
        owner = (call.tenant_id, call.user_id)
        key = request_key(call.tenant_id, call.request_id)  # ids are scoped per tenant
        while True:
            entry = self._lookup(key, time.monotonic())
            if entry is not None:
                return entry.frame if entry.owner == owner else _duplicate(call)
            running = self._running.get(key)
            if running is None:
                break
            if running[0] != owner:
                return _duplicate(call)
            shared = await asyncio.shield(running[1])
            if shared is not None:
                return shared
            # the first attempt was abandoned (its caller went away): run it ourselves
        future: asyncio.Future[KnownServerMessage | None] = asyncio.get_running_loop().create_future()
        self._running[key] = (owner, future)
        frame: KnownServerMessage | None = None
        try:
            frames = await answer(ctx)
            frame = frames[0]
            self._keep(key, owner, frame, time.monotonic())
            return frame
        finally:
            del self._running[key]
            future.set_result(frame)


def _failure_frame(call: Call, failure: Failure) -> ErrorMessage:
    return error_message(
        failure.code,
        failure.message,
        request_id=call.request_id,
        details=failure.details,
        retryable=failure.retryable,
    )


def _priority(call: Call, default: int) -> int:
    value = call.metadata.get("priority")
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        return default
    low, high = PRIORITY_RANGE
    return max(low, min(high, int(value)))


class Router:
    """The Route pipeline over a registry and the store."""

    def __init__(
        self,
        *,
        registry: Registry,
        store: Store,
        settings: Settings,
        handlers: HandlerClient | None = None,
        replay: SyncReplay | None = None,
        offers: Offers | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.settings = settings
        self.handlers = handlers or HandlerClient(max_message_bytes=settings.grpc_max_message_bytes)
        self.replay = replay or SyncReplay()
        self.offers = offers or Offers(settings=settings)
        self.system = SystemActions(store=store)
        self._pipeline = chain([observe, self._resolve, authorize, self._validate], self._dispatch)
        self._submit_pipeline = chain(
            [observe, self._submittable, self._resolve, self._async_only, authorize, self._validate],
            self._dispatch,
        )

    async def route(self, call: Call) -> Frames:
        """The frames answering ``call``, in order; never raises for a client's mistake."""
        return await self._pipeline(RouteContext(call=call))

    async def submit(self, call: Call) -> RouteContext:
        """A backend's ``Submit``: the same checks as ``Route``, then the request is queued.

        Only async actions can be submitted (nobody waits on a connection for a sync
        answer). The answer is ``ctx.frames[0]``; ``ctx.record`` is the request stored,
        when a new one was.
        """
        ctx = RouteContext(call=call, submitted=True)
        ctx.frames = await self._submit_pipeline(ctx)
        return ctx

    async def close(self) -> None:
        await self.offers.close()
        await self.handlers.close()

    # --- middleware steps -------------------------------------------------------------

    async def _resolve(self, ctx: RouteContext, nxt: Next) -> Frames:
        call = ctx.call
        if call.is_system:
            ctx.mode = "system"
            return await self.system.handle(call)
        spec = self.registry.lookup(call.action)
        if spec is None:
            return [
                error_message(
                    INVALID_ACTION, f"Unknown action {call.action[:128]!r}", request_id=call.request_id
                )
            ]
        ctx.spec = spec
        ctx.mode = "async" if spec.is_async(threshold=self.settings.async_threshold_seconds) else "sync"
        return await nxt(ctx)

    async def _submittable(self, ctx: RouteContext, nxt: Next) -> Frames:
        if ctx.call.is_system:
            return [
                error_message(
                    INVALID_ACTION, "System actions cannot be submitted", request_id=ctx.call.request_id
                )
            ]
        return await nxt(ctx)

    async def _async_only(self, ctx: RouteContext, nxt: Next) -> Frames:
        if ctx.mode != "async":
            return [
                error_message(
                    INVALID_ACTION,
                    f"Action {ctx.call.action[:128]!r} is synchronous; only async actions can be submitted",
                    request_id=ctx.call.request_id,
                )
            ]
        return await nxt(ctx)

    async def _validate(self, ctx: RouteContext, nxt: Next) -> Frames:
        assert ctx.spec is not None
        errors = payload_errors(ctx.spec.payload_schema, ctx.call.payload)
        if errors:
            first = errors[0]
            where = f"{first['path']}: " if first["path"] else ""
            return [
                error_message(
                    VALIDATION_ERROR,
                    f"Invalid payload for {ctx.spec.name!r}: {where}{first['message']}",
                    request_id=ctx.call.request_id,
                    details=errors,
                )
            ]
        return await nxt(ctx)

    async def _dispatch(self, ctx: RouteContext) -> Frames:
        if ctx.mode == "async":
            return [await self._queue(ctx)]
        return [await self.replay.run(ctx.call, self._invoke, ctx)]

    # --- the two paths ----------------------------------------------------------------

    async def _invoke(self, ctx: RouteContext) -> Frames:
        """Run a sync action: its result as ``response``, or an ``error`` frame.

        The deadline is the action's timeout, cut to what is left of the caller's own.
        Progress events of a sync action are not forwarded: a sync answer is one frame.
        """
        spec, call = ctx.spec, ctx.call
        assert spec is not None
        if not spec.endpoint:
            return [
                _failure_frame(
                    call,
                    Failure(
                        code=SERVICE_UNAVAILABLE,
                        message=f"The handler of {call.action!r} has no endpoint yet",
                        retryable=True,
                    ),
                )
            ]
        deadline = spec.timeout
        if call.deadline is not None:
            deadline = max(0.001, min(deadline, call.deadline))
        async for event in self.handlers.invoke(spec.endpoint, Invocation.of(call), timeout=deadline):
            if isinstance(event, Result):
                return [response_message(call.request_id, event.data)]
            if isinstance(event, Failure):
                return [_failure_frame(call, event)]
        raise AssertionError("an invocation always ends with a result or a failure")  # pragma: no cover

    async def _validate_remote(self, spec: ActionSpec, call: Call) -> ErrorMessage | None:
        """Ask the handler to check the payload (its own rules beyond the schema).

        Returns a ``VALIDATION_ERROR`` frame when the handler refuses it; None when it
        accepts it *or cannot be asked* — an async request must be queued even while its
        handler is down or scaling, and the processor's Invoke validates again.
        """
        if not spec.endpoint:
            return None
        refused = await self.handlers.validate(
            spec.endpoint, Invocation.of(call), timeout=VALIDATE_DEADLINE_SECONDS
        )
        if refused is not None and refused.grpc_status:
            log.info(
                "handler validation skipped",
                extra={"handler": spec.handler, "grpc_status": refused.grpc_status},
            )
            return None
        if refused is None or refused.code != VALIDATION_ERROR:
            return None
        return _failure_frame(call, refused)

    async def _queue(self, ctx: RouteContext) -> KnownServerMessage:
        spec, call = ctx.spec, ctx.call
        assert spec is not None
        if not call.connection_id and not ctx.submitted:
            return error_message(
                VALIDATION_ERROR, "An async request needs a connection", request_id=call.request_id
            )
        refused = await self._validate_remote(spec, call)
        if refused is not None:
            return refused
        record = RequestRecord.new(
            request_id=call.request_id,
            action=call.action,
            user_id=call.user_id,
            tenant_id=call.tenant_id,
            connection_id=call.connection_id,
            connection_endpoint=call.connection_endpoint,
            payload=call.payload,
            metadata=call.metadata,
            handler=spec.handler,
            priority=_priority(call, spec.priority),
            max_attempts=spec.max_attempts,
            timeout=spec.timeout,
            permissions=call.permissions,
            # A dedicated queue has its own processors, which the router does not offer to.
            offer_grace=self.settings.offer_grace_seconds
            if self.offers.enabled and not spec.queue_table
            else None,
        )
        try:
            try:
                await self.store.requests.create(record)
            except AlreadyExists as exc:
                return await self._resent(call, exc.existing)
            ctx.record = record
        except StoreError as exc:
            log.warning("could not store request: %s", exc)
            return error_message(
                SERVICE_UNAVAILABLE, "Request storage is unavailable; try again", request_id=call.request_id
            )
        # Submit offers it once the user's connections are attached; a dedicated queue has
        # its own processors, which the router does not offer to.
        if not ctx.submitted and not spec.queue_table:
            self.offers.submit(record)  # direct dispatch; the stream is the safety net
        return acknowledgment_message(call.request_id)

    async def _resent(self, call: Call, existing: RequestRecord | None) -> KnownServerMessage:
        """The same id again: its state for the same user, DUPLICATE_REQUEST for anyone else."""
        if existing is None or (existing.tenant_id, existing.user_id) != (call.tenant_id, call.user_id):
            return _duplicate(call)
        if call.connection_id and not existing.terminal and existing.connection_id != call.connection_id:
            existing = await attach(self.store, existing, call)
        return outcome_frame(existing)
