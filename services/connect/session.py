"""One open WebSocket: its send queue, writer, heartbeat beat and the way it closes.

Everything that writes to a socket goes through :meth:`ClientConnection.send_text`. When
nothing is queued or being written and the transport is not back-pressured, the frame is
written to the transport at once (no task wake-up per frame: what a fan-out to thousands
of sockets spends its time on otherwise). Else it is appended to a bounded queue that a
writer task drains; the queue and the task exist only while frames wait (an idle socket
holds neither: an ``asyncio.Queue`` and a task cost ~4 KiB a socket). That keeps a
client that reads slowly from blocking whoever produced the frame (a Route answer, a
gRPC ``Send`` from the processor), and turns "too slow to read" into a decision: when
the queue is full — by count (``STREAMER_WS_SEND_QUEUE``) or by bytes
(``STREAMER_WS_SEND_QUEUE_BYTES``) — the connection is closed with 1013 instead of
growing memory. A frame is always queued when nothing else is (one large result must
still get through), so a socket's queue holds at most the byte bound plus one frame.

Closing is one idempotent call that records *why* (for the disconnect metric); the
first reason wins. A flushing close (Disconnect, drain) lets queued frames out first,
for at most :data:`~services.connect.limits.FLUSH_TIMEOUT_SECONDS`; every close
handshake is bounded by :data:`~services.connect.limits.CLOSE_TIMEOUT_SECONDS`, after
which the transport is aborted, so a dead peer never pins a socket.

The heartbeat has no task here: the pod's one
:class:`~services.connect.heartbeat.HeartbeatSchedule` calls :meth:`ClientConnection.beat`
when the socket is due, and the ping is written straight to the transport like a frame
(a task only when the transport is back-pressured).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Coroutine
from typing import Any

from aiohttp import WSMsgType, web

from services.connect import metrics
from services.connect.heartbeat import Beat, Pulse
from services.connect.limits import (
    CLOSE_TIMEOUT_SECONDS,
    FLUSH_TIMEOUT_SECONDS,
    Strikes,
    TokenBucket,
    close_reason,
    utf8_size,
)
from streamer import protocol
from streamer.auth import Identity
from streamer.store import ConnectionRecord

log = logging.getLogger(__name__)


class ClientConnection:
    """State of one accepted WebSocket (see the module docstring)."""

    # Slots, not a __dict__: a pod holds thousands of these (about 1 KiB a socket less).
    __slots__ = (
        "_closer",
        "_expiry",
        "_pending_close",
        "_ping",
        "_pulse",
        "_queue",
        "_started",
        "_write_failed",
        "_writer",
        "_writing",
        "background",
        "bucket",
        "close_code",
        "closing",
        "connection_id",
        "disconnect_reason",
        "identity",
        "inflight",
        "last_activity",
        "last_touch",
        "loop",
        "opened_at",
        "queue_bytes_limit",
        "queue_limit",
        "queued_bytes",
        "record",
        "routing",
        "strikes",
        "touching",
        "transport",
        "ws",
    )

    def __init__(
        self,
        *,
        record: ConnectionRecord,
        identity: Identity,
        ws: web.WebSocketResponse,
        queue_limit: int,
        bucket: TokenBucket,
        queue_bytes_limit: int | None = None,
        strikes: Strikes,
    ) -> None:
        self.record = record
        self.connection_id = record.connection_id
        self.identity = identity
        self.ws = ws
        self.queue_limit = queue_limit
        self.queue_bytes_limit = queue_bytes_limit
        self.queued_bytes = 0  # UTF-8 bytes of the frames in the queue
        self.bucket = bucket
        self.strikes = strikes
        self._queue: collections.deque[str] | None = None  # frames waiting; made when one must wait
        self.inflight: set[asyncio.Task[None]] = set()
        #: Request ids whose Route answer is still on its way → frames pushed for them
        #: meanwhile (see :meth:`push_text`).
        self.routing: dict[str, tuple[str, list[str]]] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.loop = asyncio.get_running_loop()
        self.opened_at = self.loop.time()
        self.last_activity = self.opened_at
        self.last_touch = self.opened_at
        self.touching = False
        self.closing = False
        self.disconnect_reason = ""
        self.close_code: int | None = None
        self.transport: asyncio.BaseTransport | None = None
        self._started = False
        self._writing = False  # the writer task is inside a write (direct writes must wait)
        self._write_failed = False  # a write failed: the peer is gone, nothing more is written
        self._pending_close: tuple[int, str, bool] | None = None
        self._writer: asyncio.Task[None] | None = None  # runs only while frames wait
        self._pulse = Pulse()
        self._ping: asyncio.Task[None] | None = None  # a ping waiting for the transport
        self._expiry: asyncio.TimerHandle | None = None  # a timer, not a task per socket
        self._closer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, transport: asyncio.BaseTransport | None, expires_in: float | None = None) -> None:
        """Begin writing (call once the upgrade is done; then add it to the heartbeat schedule).

        ``expires_in``: seconds until the token stops being valid; the socket is then
        closed with 4002 so the client reconnects with a fresh token — a socket never
        outlives the credential it was opened with.
        """
        self.transport = transport
        self._started = True
        self._start_writer()
        if self._pending_close is not None:
            code, reason, flush = self._pending_close
            self._closer = asyncio.create_task(self._close(code, reason, flush))
        if expires_in is not None:
            self._expiry = self.loop.call_later(max(0.0, expires_in), self._expire)

    def _expire(self) -> None:
        log.info("token expired; closing the socket")
        self.close(code=protocol.CLOSE_TOKEN_EXPIRED, reason="token expired", why="token_expired", flush=True)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A background task tied to this connection (kept referenced until done)."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def alive(self) -> None:
        """The client showed it is there (a frame or a pong)."""
        self.last_activity = self.loop.time()

    def touch_due(self, every: float) -> bool:
        """Whether the record's last-seen/TTL should be refreshed now (claims the slot)."""
        now = self.loop.time()
        if self.touching or self.closing or now - self.last_touch < every:
            return False
        self.last_touch = now
        self.touching = True
        return True

    # ------------------------------------------------------------------ sending

    def send_text(self, text: str) -> bool:
        """Queue one frame; False when closing or the queue is full (which closes it, 1013)."""
        if self.closing:
            metrics.send_failures_total.labels("closed").inc()
            return False
        if self._write_now(text):
            return True
        size = utf8_size(text)
        queued = self.queued_frames
        if queued >= self.queue_limit or (
            queued
            and self.queue_bytes_limit is not None
            and self.queued_bytes + size > self.queue_bytes_limit
        ):
            metrics.send_failures_total.labels("queue_full").inc()
            log.warning(
                "send queue full; closing a client too slow to read",
                extra={"queued": queued, "queued_bytes": self.queued_bytes, "frame_bytes": size},
            )
            self.close(
                code=protocol.CLOSE_TRY_AGAIN,
                reason="client too slow to read",
                why="slow_reader",
                flush=False,
            )
            return False
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.append(text)
        self.queued_bytes += size
        self._start_writer()
        return True

    @property
    def queued_frames(self) -> int:
        """Frames waiting for the writer task."""
        return len(self._queue) if self._queue is not None else 0

    def _start_writer(self) -> None:
        """Start the writer task if frames wait and none runs (it ends when the queue is empty)."""
        if not self._started or self._write_failed or not self._queue:
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name=f"ws-writer-{self.connection_id}")

    def _write_now(self, text: str) -> bool:
        """Write one frame straight to the transport; False when it must be queued instead.

        Only when it keeps the order and the flow control of the queued path: nothing
        queued, the writer task not in the middle of a write, the transport not paused
        (its buffer under the high-water mark). Uses aiohttp's frame writer directly
        (the sockets never negotiate compression, so a frame is one synchronous write);
        anything unexpected falls back to the queue.
        """
        if self._writing or self._queue or self._write_failed:
            return False
        write = self._direct_writer()
        if write is None:
            return False
        data = text.encode("utf-8")
        try:
            write(data, WSMsgType.TEXT, 0)
        except (ConnectionError, RuntimeError) as exc:
            metrics.send_failures_total.labels("error").inc()
            log.debug("write failed: %s", type(exc).__name__)
            return True  # the peer is gone; the reader sees it next (as in the writer task)
        metrics.messages_out_total.inc()
        metrics.bytes_out_total.inc(len(data))
        return True

    def _direct_writer(self) -> Any:
        """aiohttp's synchronous frame writer when a frame may be written at once, else None."""
        if not self._started or self.ws.closed:
            return None
        writer = getattr(self.ws, "_writer", None)
        write = getattr(writer, "_write_websocket_frame", None)
        if write is None or getattr(writer, "compress", True) or getattr(writer, "_closing", True):
            return None
        if getattr(getattr(writer, "protocol", None), "_paused", True):
            return None
        return write

    def push_text(self, text: str) -> bool:
        """A frame pushed by another service (``Connections.Send``): like :meth:`send_text`,
        except that a frame of a request whose Route answer has not been written yet waits
        for it. With direct dispatch a processor can start a request — and send its first
        progress — before the router's ``acknowledgment`` is back here; the client must
        still see the acknowledgment first.
        """
        if self.routing:
            for needle, held in self.routing.values():
                if needle in text:
                    held.append(text)
                    return not self.closing
        return self.send_text(text)

    def routing_started(self, request_id: str) -> None:
        # As protocol.encode writes it: compact JSON.
        self.routing.setdefault(request_id, ('"request_id":' + json.dumps(request_id), []))

    def routing_done(self, request_id: str) -> None:
        """The Route answer was queued: release the frames held for it, in order."""
        entry = self.routing.pop(request_id, None)
        for text in entry[1] if entry is not None else ():
            self.send_text(text)

    def send_message(self, message: protocol.KnownServerMessage) -> bool:
        return self.send_text(protocol.encode(message))

    async def _write_queued(self) -> None:
        """Write the queued frames in order, then end (a later frame that must wait starts
        another). Direct writes stay off while this runs: the queue is not empty, or
        ``_writing`` is set during the write itself."""
        queue = self._queue
        while queue:
            item = queue.popleft()
            self.queued_bytes -= utf8_size(item)
            self._writing = True
            try:
                await self.ws.send_str(item)
            except (ConnectionError, RuntimeError) as exc:
                # The peer is gone or the socket is closing; the reader sees it next.
                metrics.send_failures_total.labels("error").inc()
                log.debug("write failed: %s", type(exc).__name__)
                self._write_failed = True
                return
            finally:
                self._writing = False
            metrics.messages_out_total.inc()
            metrics.bytes_out_total.inc(utf8_size(item))

    def beat(self, now: float, missed_pongs: int) -> bool:
        """One heartbeat tick (called by the schedule): ping, or close (4000) after
        ``missed_pongs`` unanswered pings. False when the socket needs no more ticks.

        A ping is a control frame: written straight to the transport when it is not
        back-pressured (it may go between queued data frames, as the protocol allows),
        else as its own task, never cancelled (see :meth:`_close` for why).
        """
        if self.closing:
            return False
        pending = self._ping is not None and not self._ping.done()
        verdict = self._pulse.tick(
            now=now, last_activity=self.last_activity, ping_pending=pending, missed_pongs=missed_pongs
        )
        if verdict is Beat.TIMEOUT:
            log.info("heartbeat timeout", extra={"missed_pongs": self._pulse.missed})
            self.close(
                code=protocol.CLOSE_HEARTBEAT, reason="heartbeat timeout", why="heartbeat", flush=False
            )
            return False
        if verdict is Beat.PING:
            write = self._direct_writer()
            if write is None:
                self._ping = self.spawn(self._send_ping())
            else:
                try:
                    write(b"", WSMsgType.PING, 0)
                except (ConnectionError, RuntimeError) as exc:
                    log.debug("ping failed: %s", type(exc).__name__)
        return True

    async def _send_ping(self) -> None:
        # CancelledError too: a close that gives up waiting for the socket to drain
        # cancels aiohttp's shared drain future, which this ping may be waiting on.
        with contextlib.suppress(ConnectionError, RuntimeError, asyncio.CancelledError):
            await self.ws.ping()

    # ------------------------------------------------------------------ closing

    def close(self, *, code: int, reason: str, why: str, flush: bool) -> None:
        """Close the socket with ``code``/``reason``; ``why`` labels the disconnect metric."""
        if self.closing:
            return
        self.closing = True
        self.disconnect_reason = why
        self.close_code = code
        if not self._started:
            self._pending_close = (code, reason, flush)
            return
        self._closer = asyncio.create_task(
            self._close(code, reason, flush), name=f"ws-close-{self.connection_id}"
        )

    def closed_by_peer(self, why: str) -> None:
        """The client (or the network) ended the connection; nothing left to send."""
        if not self.closing:
            self.closing = True
            self.disconnect_reason = why
            self.close_code = self.ws.close_code

    async def _close(self, code: int, reason: str, flush: bool) -> None:
        # Never cancel a task that may be waiting for the socket to drain: aiohttp
        # shares one drain future between all writers, so cancelling one cancels the
        # wait of every other (this close's own included). The writer is stopped by
        # emptying the queue instead (it ends after its current write), and only
        # cancelled once the transport is closed.
        writer = self._writer
        if not flush:
            self._discard_queued()
        if writer is not None and not writer.done() and flush:
            done, _ = await asyncio.wait({writer}, timeout=FLUSH_TIMEOUT_SECONDS)  # never cancels it
            if not done:
                log.info("queued frames not flushed before close")
                self._discard_queued()
        try:
            await asyncio.wait_for(
                self.ws.close(code=code, message=close_reason(reason).encode("utf-8")),
                timeout=CLOSE_TIMEOUT_SECONDS,
            )
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def _discard_queued(self) -> None:
        if self._queue is not None:
            self._queue.clear()
        self.queued_bytes = 0

    def abort(self) -> None:
        """Drop the TCP connection without a handshake (a peer that does not answer)."""
        # abort() even when close() was already called: close() waits for a write
        # buffer that a peer which stopped reading never empties.
        abort = getattr(self.transport, "abort", None)
        if abort is not None:
            with contextlib.suppress(Exception):
                abort()

    async def finish(self) -> None:
        """Stop every task of this connection; waits for a close in progress (bounded)."""
        if self._expiry is not None:
            self._expiry.cancel()
        for task in self.inflight:
            task.cancel()
        if self._closer is None and self._started and not self.ws.closed:
            # Nobody closed the socket (the read loop failed): close it here.
            self._closer = asyncio.create_task(self._close(protocol.CLOSE_INTERNAL, "internal error", False))
        if self._closer is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._closer), timeout=CLOSE_TIMEOUT_SECONDS + FLUSH_TIMEOUT_SECONDS + 1
                )
            except TimeoutError:
                self.abort()
                self._closer.cancel()
        # The transport is closed now, so no task is left waiting for it to drain.
        owned = [t for t in (self._writer, *self.inflight) if t is not None]
        for task in owned:
            task.cancel()
        pending = owned + list(self.background)
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    @property
    def duration(self) -> float:
        return self.loop.time() - self.opened_at
