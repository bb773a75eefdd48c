"""What the gateway does with each frame a client sends: policy, then dispatch.

Per data frame, without awaiting: size policy (:class:`~services.connect.limits.FramePolicy`),
the connection's token bucket, then parse (``streamer.protocol``). ``$ping`` is answered
here; every other valid message is handed to routing (capped at
:data:`~services.connect.limits.MAX_IN_FLIGHT` per connection). Pings and pongs from the
client count as signs of life for the heartbeat and the record's refresh.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from aiohttp import WSMsgType
from aiohttp.http_websocket import WebSocketError

from services.connect import metrics
from services.connect.limits import MAX_IN_FLIGHT, FramePolicy, FrameVerdict, utf8_size
from services.connect.session import ClientConnection
from streamer import protocol

log = logging.getLogger(__name__)

#: Starts routing one parsed message: (connection, message, request id).
Dispatch = Callable[[ClientConnection, protocol.ClientMessage, str], None]
#: Called whenever the client shows it is there (refreshes the record when due).
Seen = Callable[[ClientConnection], None]


class FrameHandler:
    """Reads one socket's frames and applies the gateway's policy to each."""

    def __init__(self, *, policy: FramePolicy, dispatch: Dispatch, seen: Seen, max_frame_bytes: int) -> None:
        self.policy = policy
        self.dispatch = dispatch
        self.seen = seen
        self.max_frame_bytes = max_frame_bytes

    async def read_loop(self, conn: ClientConnection) -> None:
        """Until the client closes, the socket fails, or the connection is closing."""
        ws = conn.ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                self.on_frame(conn, msg.data, utf8_size(msg.data))
            elif kind is WSMsgType.BINARY:
                self.on_frame(conn, msg.data, len(msg.data))
            elif kind is WSMsgType.PING:
                conn.alive()
                self.seen(conn)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                conn.alive()
                self.seen(conn)
            elif kind is WSMsgType.ERROR:
                exc = msg.data
                if isinstance(exc, WebSocketError) and exc.code == protocol.CLOSE_TOO_BIG:
                    # Over aiohttp's max_msg_size (hard limit + 1): it closed with 1009 already.
                    metrics.rejected_frames_total.labels(str(protocol.CLOSE_TOO_BIG)).inc()
                    conn.closed_by_peer("too_large")
                else:
                    conn.closed_by_peer("error")
                return
            else:  # CLOSE, CLOSING, CLOSED
                return
            if conn.closing:
                return

    def on_frame(self, conn: ClientConnection, data: str | bytes, size: int) -> None:
        """Handle one data frame without awaiting (routes run as their own tasks)."""
        metrics.messages_in_total.inc()
        metrics.bytes_in_total.inc(size)
        if conn.closing:  # a frame that crossed our close frame: nothing can be answered
            return
        conn.alive()
        self.seen(conn)
        verdict = self.policy.check(size)
        if verdict is FrameVerdict.CLOSE:
            metrics.rejected_frames_total.labels(str(protocol.CLOSE_TOO_BIG)).inc()
            conn.close(code=protocol.CLOSE_TOO_BIG, reason="frame too large", why="too_large", flush=False)
            return
        if not conn.bucket.take():
            metrics.rejected_frames_total.labels(protocol.RATE_LIMITED).inc()
            if conn.strikes.hit():
                conn.close(
                    code=protocol.CLOSE_POLICY, reason="rate limit exceeded", why="rate_limit", flush=False
                )
                return
            conn.send_message(
                protocol.error_message(
                    protocol.RATE_LIMITED,
                    "Too many messages; slow down",
                    request_id=protocol.peek_request_id(data, max_bytes=self.max_frame_bytes),
                    details={"retry_after": round(conn.bucket.retry_after(), 3)},
                    retryable=True,
                )
            )
            return
        conn.strikes.reset()
        if verdict is FrameVerdict.TOO_LARGE:
            metrics.rejected_frames_total.labels(protocol.PAYLOAD_TOO_LARGE).inc()
            conn.send_message(
                protocol.error_message(
                    protocol.PAYLOAD_TOO_LARGE,
                    f"Frame is {size} bytes; the limit is {self.policy.limit}",
                    details={"size": size, "limit": self.policy.limit},
                )
            )
            return
        try:
            message = protocol.parse_client_frame(data)
        except protocol.ProtocolError as exc:
            metrics.rejected_frames_total.labels(exc.code).inc()
            conn.send_message(exc.to_message())
            return
        if message.action == protocol.PING:
            conn.send_message(protocol.pong_message())
            return
        request_id = message.request_id or protocol.new_request_id()
        if len(conn.inflight) >= MAX_IN_FLIGHT:
            metrics.rejected_frames_total.labels(protocol.RATE_LIMITED).inc()
            conn.send_message(
                protocol.error_message(
                    protocol.RATE_LIMITED,
                    f"More than {MAX_IN_FLIGHT} requests in flight on this connection",
                    request_id=request_id,
                    retryable=True,
                )
            )
            return
        self.dispatch(conn, message, request_id)
