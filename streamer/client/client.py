"""The async Python client of Streamer's WebSocket protocol (DESIGN §2): the public API.

One :class:`StreamerClient` holds one WebSocket through its
:class:`~streamer.client.transport.Transport` (socket, reconnect with backoff, jitter and
the drain hint, several URLs, heartbeat). This module is the protocol on top: it routes
every server message to the request it names; each request the client knows about is a
:class:`RequestHandle` that keeps its future, its history and its listeners *across
reconnects*. That is what lets ``await client.request(...)`` survive a dropped
connection: after the transport reconnects, the client re-sends frames the server never
acknowledged (ids make that idempotent), sends ``$resume`` so the server re-attaches
queued requests to the new connection and sends their current state, re-subscribes to
requests it was following, and asks with ``$subscribe`` for every pending request
``$resume`` did not mention, so each settles whatever its age. Duplicate progress frames
that a resume may replay are dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Generic, TypeVar

import aiohttp

from streamer import protocol
from streamer.client.errors import (
    ConnectionClosedError,
    ProcessingFailedError,
    RequestCancelledError,
    RequestTimeoutError,
    StreamerError,
    error_from_message,
)
from streamer.client.transport import (
    DEFAULT_MAX_FRAME_BYTES,
    NO_RECONNECT_CODES,
    TokenProvider,
    Transport,
    maybe_await,
)

log = logging.getLogger("streamer.client")

__all__ = [
    "NO_RECONNECT_CODES",
    "Progress",
    "RequestHandle",
    "StreamerClient",
    "TokenProvider",
    "is_terminal",
]

ProgressCallback = Callable[["Progress"], "Any"]
MessageCallback = Callable[[dict[str, Any]], "Any"]

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
#: Finished requests remembered so ``events()`` called late still sees their history.
FINISHED_KEPT = 256


@dataclasses.dataclass(frozen=True)
class Progress:
    """One progress report, as given to ``on_progress``; ``raw`` is the server message."""

    request_id: str
    percentage: float
    message: str
    seq: int | None
    timestamp: str | None
    metadata: Mapping[str, Any] | None
    raw: Mapping[str, Any]

    @classmethod
    def from_message(cls, msg: Mapping[str, Any]) -> Progress:
        pct = msg.get("percentage", 0)
        seq = msg.get("seq")
        meta = msg.get("metadata")
        return cls(
            request_id=str(msg.get("request_id", "")),
            percentage=float(pct) if isinstance(pct, int | float) else 0.0,
            message=str(msg.get("message") or ""),
            seq=seq if isinstance(seq, int) else None,
            timestamp=msg.get("timestamp") if isinstance(msg.get("timestamp"), str) else None,
            metadata=meta if isinstance(meta, Mapping) else None,
            raw=msg,
        )


def is_terminal(msg: Mapping[str, Any]) -> bool:
    """Whether a server message ends its request (result, error, or a terminal status)."""
    kind = msg.get("type")
    if kind in ("response", "complete", "error"):
        return True
    return kind == "status" and msg.get("status") in TERMINAL_STATUSES


def _outcome(msg: Mapping[str, Any]) -> tuple[Any, StreamerError | None]:
    """(result, error) of a terminal message."""
    kind = msg.get("type")
    if kind == "response":
        return msg.get("data"), None
    if kind == "complete":
        return msg.get("result"), None
    if kind == "error":
        return None, error_from_message(msg)
    status = msg.get("status")
    rid = msg.get("request_id") if isinstance(msg.get("request_id"), str) else None
    if status == "COMPLETED":
        return msg.get("result"), None
    if status == "CANCELLED":
        return None, RequestCancelledError(str(msg.get("message") or "Request cancelled"), request_id=rid)
    err = msg.get("error")
    if isinstance(err, Mapping):
        return None, error_from_message({"type": "error", "request_id": rid, "error": err})
    return None, ProcessingFailedError(str(msg.get("message") or "Request failed"), request_id=rid)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # Marks an exception as retrieved: a request nobody awaits must not log
    # "Future exception was never retrieved" at garbage collection.
    if not fut.cancelled():
        fut.exception()


class RequestHandle:
    """A request the client follows: its own, or one it subscribed to.

    ``await handle`` (or ``await handle.result()``) gives the result or raises the
    typed error; ``handle.events()`` iterates over its messages from the first one.
    """

    def __init__(
        self,
        client: StreamerClient,
        *,
        request_id: str,
        action: str | None,
        frame: dict[str, Any] | None,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self._client = client
        self.request_id = request_id
        self.action = action
        #: The frame that started it (re-sent after a reconnect until acknowledged); None for subscriptions.
        self.frame = frame
        self.on_progress = on_progress
        self.messages: list[dict[str, Any]] = []
        self.acknowledged = False
        self.subscribed = False
        self.status: str | None = None
        self.percentage: float = 0.0
        #: When the client last received a message of this request (event-loop time).
        self.last_seen_at: float = 0.0
        self._seen_progress: set[tuple[Any, Any, Any]] = set()
        self._listeners: list[asyncio.Queue[dict[str, Any] | None]] = []
        self._future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._future.add_done_callback(_retrieve)

    # -- state ------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self._future.done()

    def __await__(self) -> Any:
        return self.result().__await__()

    async def result(self, *, timeout: float | None = None) -> Any:
        """The result; raises the request's :class:`StreamerError` (or a timeout)."""
        if timeout is None:
            return await asyncio.shield(self._future)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self._future)
        except TimeoutError:
            raise RequestTimeoutError(
                f"No result within {timeout:g}s (the request may still be running on the server)",
                request_id=self.request_id,
                retryable=True,
            ) from None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Every message of this request, from the first; ends after the terminal one."""
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        for seen in self.messages:
            queue.put_nowait(seen)
        if self.done:
            queue.put_nowait(None)
        else:
            self._listeners.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            with contextlib.suppress(ValueError):
                self._listeners.remove(queue)

    async def cancel(self) -> dict[str, Any]:
        return await self._client.cancel(self.request_id)

    # -- feeding (called by the client) -------------------------------------------
    def _feed(self, msg: dict[str, Any]) -> None:
        if self.done:
            return  # a replayed or late message after the end: the outcome is fixed
        self.last_seen_at = asyncio.get_running_loop().time()
        kind = msg.get("type")
        if kind == "progress":
            key = (msg.get("seq"), msg.get("percentage"), msg.get("message"))
            if key in self._seen_progress:
                return  # replayed by $resume or a re-sent frame
            self._seen_progress.add(key)
            self.acknowledged = True
            self.status = "PROCESSING"
            pct = msg.get("percentage")
            if isinstance(pct, int | float):
                self.percentage = float(pct)
        elif kind == "acknowledgment":
            self.acknowledged = True
            self.status = self.status or "PENDING"
        elif kind == "status":
            self.acknowledged = True
            status = msg.get("status")
            if isinstance(status, str):
                self.status = status
            pct = msg.get("percentage")
            if isinstance(pct, int | float):
                self.percentage = float(pct)
        self.messages.append(msg)
        for queue in self._listeners:
            queue.put_nowait(msg)
        if kind == "progress" and self.on_progress is not None:
            self._client._spawn(self._call_progress(Progress.from_message(msg)))
        if is_terminal(msg):
            result, error = _outcome(msg)
            if kind in ("response", "complete"):
                self.status = "COMPLETED"
                self.percentage = 100.0
            elif kind == "error":
                code = msg.get("error", {}).get("code")
                self.status = "CANCELLED" if code == protocol.CANCELLED else "FAILED"
            self._finish(result, error)

    async def _call_progress(self, progress: Progress) -> None:
        assert self.on_progress is not None
        try:
            await maybe_await(self.on_progress(progress))
        except Exception:
            log.exception("on_progress callback of %s raised", self.request_id)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        if self.done:
            return
        if error is not None:
            self._future.set_exception(error)
        else:
            self._future.set_result(result)
        for queue in self._listeners:
            queue.put_nowait(None)
        self._listeners.clear()
        self._client._finished(self)


@dataclasses.dataclass
class _SystemCall:
    frame: dict[str, Any]
    target: str | None
    future: asyncio.Future[dict[str, Any]]


#: Times an automatic ``$resume`` refused with a retryable error is sent again.
MAX_RESUME_RETRIES = 8
#: After a reconnect, requests ``$resume`` did not mention are asked for this many at a time...
FOLLOW_BATCH = 20
#: ...one batch every this many seconds (well under the gateway's rate limit).
FOLLOW_PAUSE = 0.25

T = TypeVar("T")


class _OnTransport(Generic[T]):
    """A StreamerClient attribute that lives on its transport (read and set through)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: StreamerClient | None, owner: type | None = None) -> T:
        if obj is None:  # looked up on the class (help(), docs tools)
            return self  # type: ignore[return-value]
        return getattr(obj._transport, self.name)  # type: ignore[no-any-return]

    def __set__(self, obj: StreamerClient, value: T) -> None:
        setattr(obj._transport, self.name, value)


class StreamerClient:
    """An async client: ``async with StreamerClient(url, token=...) as client: ...``.

    :param url: ``ws://host:port/ws`` (or ``wss://``), or several such URLs (gateways of one
        deployment): each reconnect then tries another one than the one just lost.
    :param token: a JWT, or a function (sync or async) returning one; called again on
        every reconnect, so it can refresh an expiring token.
    :param token_in: ``"header"`` (``Authorization: Bearer``, the default) or ``"query"``
        (``?token=``, for proxies that strip headers).
    :param reconnect: reconnect automatically after the connection drops. A server that
        drains asks each client to wait a moment of its own first (``reconnect_after_ms``
        in the close reason), so a drained gateway's clients come back spread out; the
        client honours it (at most ``reconnect_max_delay``).
    :param heartbeat: seconds between ``$ping`` frames (and WebSocket pings); None turns both off.
    :param reconnect_delay: first backoff delay; doubles per failed attempt up to ``reconnect_max_delay``.
    :param max_reconnect_attempts: attempts in a row before giving up (None: never give up);
        giving up fails every pending request with :class:`ConnectionClosedError`.
    :param resume_grace: after a reconnect, seconds ``$resume``'s answers may take before
        each pending request it did not mention is asked for with ``$subscribe``.
    :param max_frame_bytes: the largest frame sent (512 KiB, the gateway's default hard limit);
        a larger one raises :class:`PayloadTooLargeError` unsent instead of having the gateway
        close the socket (1009) under every other request. None: no check.
    :param on_message: called with every server message (sync or async), e.g. for logging.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | TokenProvider | None = None,
        token_in: str = "header",
        reconnect: bool = True,
        heartbeat: float | None = 20.0,
        connect_timeout: float = 10.0,
        system_timeout: float = 10.0,
        reconnect_delay: float = 0.25,
        reconnect_max_delay: float = 10.0,
        max_reconnect_attempts: int | None = 30,
        resume_grace: float = 3.0,
        max_message_bytes: int = 16 * 1024 * 1024,
        max_frame_bytes: int | None = DEFAULT_MAX_FRAME_BYTES,
        on_message: MessageCallback | None = None,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._transport = Transport(
            [url] if isinstance(url, str) else url,
            on_message=self.dispatch,
            on_reconnected=self._reattach,
            on_failed=self._fail_all,
            token=token,
            token_in=token_in,
            reconnect=reconnect,
            heartbeat=heartbeat,
            connect_timeout=connect_timeout,
            reconnect_delay=reconnect_delay,
            reconnect_max_delay=reconnect_max_delay,
            max_reconnect_attempts=max_reconnect_attempts,
            max_message_bytes=max_message_bytes,
            max_frame_bytes=max_frame_bytes,
            session=session,
            headers=headers,
        )
        self.system_timeout = system_timeout
        self.resume_grace = resume_grace
        self.on_message = on_message
        self._follower: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._requests: dict[str, RequestHandle] = {}
        self._finished_ids: collections.OrderedDict[str, RequestHandle] = collections.OrderedDict()
        self._calls: dict[str, _SystemCall] = {}
        self._resume_sink: list[dict[str, Any]] | None = None
        #: ids of automatic ``$resume`` frames in flight -> (retry count, page cursor)
        self._auto_resumes: dict[str, tuple[int, str | None]] = {}

    # The connection's settings and figures live on the transport; read and set them here.
    urls = _OnTransport[list[str]]()
    #: The URL in use (or last tried).
    url = _OnTransport[str]()
    token_in = _OnTransport[str]()
    reconnect = _OnTransport[bool]()
    heartbeat = _OnTransport["float | None"]()
    connect_timeout = _OnTransport[float]()
    reconnect_delay = _OnTransport[float]()
    reconnect_max_delay = _OnTransport[float]()
    max_reconnect_attempts = _OnTransport["int | None"]()
    max_message_bytes = _OnTransport[int]()
    max_frame_bytes = _OnTransport["int | None"]()
    #: How many times the connection was re-established (for tests and metrics).
    reconnects = _OnTransport[int]()
    last_close_code = _OnTransport["int | None"]()
    last_close_reason = _OnTransport["str | None"]()
    #: Reconnect attempts that failed (refused upgrades, unreachable gateways).
    reconnect_failures = _OnTransport[int]()

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> StreamerClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """Whether the socket is open right now (False while reconnecting or after giving up)."""
        return self._transport.connected

    async def connect(self) -> None:
        """Open the WebSocket (raises :class:`UnauthorizedError` etc. when refused)."""
        await self._transport.connect()

    async def close(self) -> None:
        """Close the connection; pending requests fail with :class:`ConnectionClosedError`."""
        if self._transport.closing:
            return
        if self._follower is not None:
            self._follower.cancel()
        await self._transport.close()
        for task in list(self._tasks):
            task.cancel()
        self._transport.fail(ConnectionClosedError("Client closed"))
        await self._transport.release()

    async def drop_connection(self) -> None:
        """Close the socket abruptly as a network failure would (tests, demos).

        With ``reconnect`` on, the client then reconnects and resumes its requests.
        """
        await self._transport.drop_connection()

    # ------------------------------------------------------------------ reading
    def dispatch(self, msg: dict[str, Any]) -> None:
        """Route one server message (public for tests that feed messages directly)."""
        if self.on_message is not None:
            self._spawn(self._call_on_message(msg))
        if self._resume_sink is not None and msg.get("resumed"):
            self._resume_sink.append(msg)
        rid = msg.get("request_id")
        kind = msg.get("type")
        if kind == "pong" and not isinstance(rid, str):
            for call_id, waiting in list(self._calls.items()):
                if waiting.frame["action"] == protocol.PING and not waiting.future.done():
                    self._calls.pop(call_id, None)
                    waiting.future.set_result(msg)
                    break
            return
        if not isinstance(rid, str):
            if kind == "error":
                self._orphan_error(msg)
            return
        cursor = msg.get("resume_cursor")
        if msg.get("resumed") and isinstance(cursor, str) and cursor:
            self._spawn(self._next_resume_page(cursor))  # a paged $resume: more to come
        if rid in self._auto_resumes:  # only a refusal names the $resume frame itself
            retry, cursor = self._auto_resumes.pop(rid)
            error = msg.get("error")
            retryable = isinstance(error, dict) and bool(error.get("retryable"))
            if kind == "error" and retryable and retry < MAX_RESUME_RETRIES:
                self._spawn(self._retry_resume(retry + 1, cursor))
            return
        call = self._calls.pop(rid, None)
        if call is not None:  # the answer names the system frame itself
            if not call.future.done():
                call.future.set_result(msg)
            return
        if kind in ("status", "error"):
            for call_id, waiting in list(self._calls.items()):
                if waiting.target == rid and not waiting.future.done():
                    self._calls.pop(call_id, None)
                    waiting.future.set_result(msg)
                    if kind == "error" and msg.get("error", {}).get("code") in (
                        protocol.NOT_FOUND,
                        protocol.FORBIDDEN,
                        protocol.VALIDATION_ERROR,
                        protocol.RATE_LIMITED,
                    ):
                        return  # the system call failed; the request itself did not
                    break
        handle = self._requests.get(rid)
        if handle is not None:
            handle._feed(msg)

    def _orphan_error(self, msg: dict[str, Any]) -> None:
        """An error that names no request: a frame the gateway rejected before parsing it.

        ``PAYLOAD_TOO_LARGE`` carries the frame's size, which identifies the request. A
        ``RATE_LIMITED`` is attributed only when exactly one request is unanswered;
        otherwise it cannot be known which frame was dropped, and it is only logged
        (the affected request then ends by its ``timeout``).
        """
        raw = msg.get("error")
        error: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        details = error.get("details")
        unanswered = [
            h for h in self._requests.values() if h.frame is not None and not h.acknowledged and not h.done
        ]
        size = details.get("size") if isinstance(details, Mapping) else None
        if isinstance(size, int):
            for handle in unanswered:
                if len(json.dumps(handle.frame, separators=(",", ":")).encode()) == size:
                    handle._feed({**msg, "request_id": handle.request_id})
                    return
        if error.get("code") == protocol.RATE_LIMITED and len(unanswered) == 1:
            unanswered[0]._feed({**msg, "request_id": unanswered[0].request_id})
            return
        log.warning("server error without a request id: %s", error)

    async def _call_on_message(self, msg: dict[str, Any]) -> None:
        assert self.on_message is not None
        try:
            await maybe_await(self.on_message(msg))
        except Exception:
            log.exception("on_message callback raised")

    # ------------------------------------------------------------------ reconnect
    async def _reattach(self) -> None:
        """After a reconnect: re-send unacknowledged frames, ``$resume``, re-subscribe."""
        pending = [h for h in self._requests.values() if not h.done]
        for handle in pending:
            if handle.frame is not None and not handle.acknowledged:
                await self._send(handle.frame)
        if any(h.frame is not None and h.acknowledged for h in pending):
            await self._send_auto_resume(0)
        for handle in pending:
            if handle.frame is None and handle.subscribed:
                await self._send(
                    {
                        "action": protocol.SUBSCRIBE,
                        "id": self._new_id("sub"),
                        "payload": {"request_id": handle.request_id},
                    }
                )
        for call in list(self._calls.values()):
            if not call.future.done():
                await self._send(call.frame)
        if any(h.frame is not None and h.acknowledged for h in pending):
            if self._follower is not None:
                self._follower.cancel()
            self._follower = asyncio.create_task(
                self._follow_unanswered(asyncio.get_running_loop().time()), name="streamer-client-follow"
            )

    async def _follow_unanswered(self, since: float) -> None:
        """Settle every pending request, whatever its age.

        ``$resume`` answers a user's unfinished requests and those finished in the last
        minutes (a bounded number). A request of this client it did not mention within
        ``resume_grace`` (finished long ago while the client was away, or crowded out) is
        asked for with ``$subscribe``: the answer is the request's stored state — its
        outcome if over — and attaches it if not; a request the server no longer has
        (past its TTL) is answered ``NOT_FOUND`` and ends with :class:`NotFoundError`.
        Sent in small batches, well under the gateway's rate limit; a reconnect on the
        way starts over.
        """
        await asyncio.sleep(self.resume_grace)
        silent = [
            h
            for h in self._requests.values()
            if not h.done and h.frame is not None and h.acknowledged and h.last_seen_at < since
        ]
        for i in range(0, len(silent), FOLLOW_BATCH):
            if self._transport.closing or not self.connected:
                return  # the next reconnect starts over
            for handle in silent[i : i + FOLLOW_BATCH]:
                if not handle.done:
                    with contextlib.suppress(StreamerError):
                        await self._send(
                            {
                                "action": protocol.SUBSCRIBE,
                                "id": self._new_id("sub"),
                                "payload": {"request_id": handle.request_id},
                            }
                        )
            await asyncio.sleep(FOLLOW_PAUSE)

    async def _send_auto_resume(self, retry: int, cursor: str | None = None) -> None:
        rid = self._new_id("resume")
        self._auto_resumes[rid] = (retry, cursor)
        payload = {"cursor": cursor} if cursor else {}
        await self._send({"action": protocol.RESUME, "id": rid, "payload": payload})

    async def _next_resume_page(self, cursor: str) -> None:
        """The server had more to resume than one answer holds: ask for the next page."""
        with contextlib.suppress(StreamerError):
            await self._send_auto_resume(0, cursor)

    async def _retry_resume(self, retry: int, cursor: str | None = None) -> None:
        """Send ``$resume`` again after a retryable refusal (the router restarting too).

        Without it, a reconnect that races a router restart never re-attaches the
        requests, and their results go to the dead connection (found by the chaos run).
        """
        await asyncio.sleep(min(5.0, 0.25 * 2**retry))
        if self._transport.closing or self._transport.closed_error is not None:
            return
        with contextlib.suppress(StreamerError):
            await self._send_auto_resume(retry, cursor)

    # ------------------------------------------------------------------ sending
    async def _send(self, frame: Mapping[str, Any]) -> None:
        await self._transport.send(frame)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _new_id(prefix: str = "c") -> str:
        return f"{prefix}-{uuid.uuid4().hex}"

    def _fail_all(self, error: StreamerError) -> None:
        """The transport gave up (or was closed): every pending request and call fails."""
        for handle in list(self._requests.values()):
            handle._finish(None, type(error)(error.message, code=error.code, request_id=handle.request_id))
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(type(error)(error.message, code=error.code))
                call.future.add_done_callback(_retrieve)
        self._calls.clear()

    def _finished(self, handle: RequestHandle) -> None:
        if self._requests.get(handle.request_id) is handle:
            del self._requests[handle.request_id]
        self._finished_ids[handle.request_id] = handle
        while len(self._finished_ids) > FINISHED_KEPT:
            self._finished_ids.popitem(last=False)

    # ------------------------------------------------------------------ requests
    def handle(self, request_id: str) -> RequestHandle | None:
        """The handle of a request this client follows (or recently finished)."""
        return self._requests.get(request_id) or self._finished_ids.get(request_id)

    async def start(
        self,
        action: str,
        payload: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> RequestHandle:
        """Send a request and return its :class:`RequestHandle` without waiting for the result."""
        if action.startswith("$"):
            raise ValueError("use the system methods (cancel, status, ...) for '$' actions")
        rid = request_id or self._new_id("c")
        if rid in self._requests:
            raise ValueError(f"request {rid!r} is already in flight on this client")
        frame: dict[str, Any] = {"action": action, "id": rid, "payload": dict(payload or {})}
        if metadata:
            frame["metadata"] = dict(metadata)
        handle = RequestHandle(self, request_id=rid, action=action, frame=frame, on_progress=on_progress)
        self._finished_ids.pop(rid, None)
        self._requests[rid] = handle
        try:
            await self._send(frame)
        except BaseException:
            self._requests.pop(rid, None)
            raise
        return handle

    async def request(
        self,
        action: str,
        payload: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run a request and return its result (sync ``data`` or async ``result``).

        Raises the :class:`StreamerError` subclass of the error code; a client-side
        ``timeout`` raises :class:`RequestTimeoutError` (the server-side request is
        not cancelled by it — call :meth:`cancel` for that).
        """
        handle = await self.start(
            action, payload, request_id=request_id, metadata=metadata, on_progress=on_progress
        )
        return await handle.result(timeout=timeout)

    def events(self, request_id: str) -> AsyncIterator[dict[str, Any]]:
        """Every message of a request, from the first the client saw; ends after the terminal one.

        For a request this client did not start, call :meth:`subscribe` first (or
        anyway: the iterator starts following it).
        """
        handle = self.handle(request_id)
        if handle is None:
            handle = RequestHandle(self, request_id=request_id, action=None, frame=None)
            self._requests[request_id] = handle
        return handle.events()

    # ------------------------------------------------------------------ system actions
    async def _system(
        self, action: str, target: str | None, *, timeout: float | None = None, raise_error: bool = True
    ) -> dict[str, Any]:
        call_id = self._new_id(action.lstrip("$"))
        frame: dict[str, Any] = {"action": action, "id": call_id, "payload": {}}
        if target is not None:
            frame["payload"]["request_id"] = target
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = _SystemCall(frame=frame, target=target, future=future)
        try:
            await self._send(frame)
            async with asyncio.timeout(timeout or self.system_timeout):
                msg = await future
        except TimeoutError:
            waited = timeout or self.system_timeout
            raise RequestTimeoutError(f"No answer to {action} within {waited:g}s") from None
        finally:
            self._calls.pop(call_id, None)
        if raise_error and msg.get("type") == "error":
            raise error_from_message({**msg, "request_id": target or msg.get("request_id")})
        return msg

    async def ping(self, *, timeout: float | None = None) -> dict[str, Any]:
        """``$ping``; returns the ``pong`` message."""
        return await self._system(protocol.PING, None, timeout=timeout)

    async def status(self, request_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """``$status``: the request's current state (a ``status`` message).

        Raises :class:`NotFoundError` for an unknown request or one of another tenant.
        """
        return await self._system(protocol.STATUS, request_id, timeout=timeout)

    async def cancel(self, request_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """``$cancel``; returns the server's answer. A CANCELLED answer is success, not an error."""
        msg = await self._system(protocol.CANCEL, request_id, timeout=timeout, raise_error=False)
        if msg.get("type") == "error" and msg.get("error", {}).get("code") != protocol.CANCELLED:
            raise error_from_message({**msg, "request_id": request_id})
        return msg

    async def subscribe(self, request_id: str, *, timeout: float | None = None) -> RequestHandle:
        """``$subscribe`` to a request of your tenant (e.g. started by another connection).

        Returns its :class:`RequestHandle`: await it for the result, iterate its
        ``events()`` for progress. Re-subscribed automatically after a reconnect.
        """
        handle = self.handle(request_id)
        created = handle is None
        if handle is None:
            handle = RequestHandle(self, request_id=request_id, action=None, frame=None)
            self._requests[request_id] = handle
        try:
            msg = await self._system(protocol.SUBSCRIBE, request_id, timeout=timeout)
        except BaseException:
            if created:
                self._requests.pop(request_id, None)
            raise
        handle.subscribed = True
        if msg.get("request_id") == request_id and msg not in handle.messages:
            handle._feed(msg)
        return handle

    async def unsubscribe(self, request_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """``$unsubscribe``: stop receiving a request's messages."""
        msg = await self._system(protocol.UNSUBSCRIBE, request_id, timeout=timeout)
        handle = self._requests.get(request_id)
        if handle is not None and handle.frame is None:
            handle.subscribed = False
            handle._finish(None, RequestCancelledError("Unsubscribed", request_id=request_id))
        return msg

    async def resume(self, *, wait: float = 0.0) -> list[dict[str, Any]]:
        """``$resume``: re-attach this user's unfinished requests to this connection.

        The server answers one ``status`` frame (``"resumed": true``) per unfinished or
        recently finished request, and nothing at all when there is none, so there is
        no reply to wait for: the frames flow into the requests' handles (and
        ``on_message``) as they arrive. An answer too long for one frame batch ends with a
        ``resume_cursor``; the client asks for the next page by itself. With ``wait`` > 0
        the frames that arrive within that many seconds are also returned. Sent
        automatically after a reconnect.
        """
        collected: list[dict[str, Any]] = []
        previous = self._resume_sink
        self._resume_sink = collected
        try:
            await self._send({"action": protocol.RESUME, "id": self._new_id("resume"), "payload": {}})
            if wait > 0:
                await asyncio.sleep(wait)
        finally:
            self._resume_sink = previous
        return collected
