"""The Python client's transport: one WebSocket to a Streamer gateway that stays up.

:class:`Transport` owns the socket and nothing of the protocol's requests: it opens it
(token in a header or the query, refused upgrades as typed errors), reads it and hands
every JSON object to its owner, sends frames, keeps it alive with heartbeats, and
reconnects after a drop — exponential backoff with jitter, the draining gateway's
``reconnect_after_ms`` hint, another gateway than the one just lost when given several
URLs. After each reconnect it awaits its owner's ``on_reconnected`` (re-attach the
requests) before reading again; when it gives up it calls ``on_failed`` once.
:class:`~streamer.client.client.StreamerClient` is that owner (the public API).

Heartbeats are two-layered: a protocol ``$ping`` every ``heartbeat`` seconds (keeps
idle-timeouts of proxies and the gateway happy) and WebSocket-level pings from aiohttp
that detect a dead peer. Silence for ``2.5 * heartbeat`` also counts as dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import random
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp

from streamer import protocol
from streamer.client.errors import (
    ConnectionClosedError,
    ForbiddenError,
    InternalError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    StreamerError,
    UnauthorizedError,
)

log = logging.getLogger("streamer.client")

__all__ = ["NO_RECONNECT_CODES", "TokenProvider", "Transport"]

TokenProvider = Callable[[], "str | Awaitable[str]"]

#: The gateway closes the whole socket (1009) for a frame over 4 x STREAMER_WS_MAX_FRAME_BYTES
#: (128 KiB by default): a frame that large is refused here instead, so it fails alone.
DEFAULT_MAX_FRAME_BYTES = 4 * 128 * 1024

#: Close codes after which reconnecting would not help (the server meant it).
NO_RECONNECT_CODES = frozenset({protocol.CLOSE_POLICY, protocol.CLOSE_TOO_BIG, protocol.CLOSE_DISCONNECTED})


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class Transport:
    """One WebSocket that reconnects; see the module docstring. Options as in StreamerClient."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        on_message: Callable[[dict[str, Any]], None],
        on_reconnected: Callable[[], Awaitable[None]],
        on_failed: Callable[[StreamerError], None],
        token: str | TokenProvider | None = None,
        token_in: str = "header",
        reconnect: bool = True,
        heartbeat: float | None = 20.0,
        connect_timeout: float = 10.0,
        reconnect_delay: float = 0.25,
        reconnect_max_delay: float = 10.0,
        max_reconnect_attempts: int | None = 30,
        max_message_bytes: int = 16 * 1024 * 1024,
        max_frame_bytes: int | None = DEFAULT_MAX_FRAME_BYTES,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if token_in not in ("header", "query"):
            raise ValueError("token_in must be 'header' or 'query'")
        self.urls = list(urls)
        if not self.urls:
            raise ValueError("at least one URL")
        #: The URL in use (or last tried).
        self.url = self.urls[0]
        self._token = token
        self.token_in = token_in
        self.reconnect = reconnect
        self.heartbeat = heartbeat
        self.connect_timeout = connect_timeout
        self.reconnect_delay = reconnect_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.max_reconnect_attempts = max_reconnect_attempts
        self.max_message_bytes = max_message_bytes
        self.max_frame_bytes = max_frame_bytes
        self._on_message = on_message
        self._on_reconnected = on_reconnected
        self._on_failed = on_failed
        self._session = session
        self._own_session = session is None
        self._headers = dict(headers or {})
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected = asyncio.Event()
        #: True once close() began.
        self.closing = False
        #: Set when the transport gave up (or was closed): every send raises it.
        self.closed_error: StreamerError | None = None
        self._runner: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        #: How many times the connection was re-established (for tests and metrics).
        self.reconnects = 0
        self.last_close_code: int | None = None
        self.last_close_reason: str | None = None
        #: Reconnect attempts that failed (refused upgrades, unreachable gateways).
        self.reconnect_failures = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        """Whether the socket is open right now (False while reconnecting or after giving up)."""
        ws = self._ws
        return self._connected.is_set() and self.closed_error is None and ws is not None and not ws.closed

    async def connect(self) -> None:
        """Open the WebSocket (raises :class:`UnauthorizedError` etc. when refused)."""
        if self._runner is not None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._ws = await self._open()
        self._connected.set()
        self._runner = asyncio.create_task(self._run(), name="streamer-client-reader")
        if self.heartbeat:
            self._pinger = asyncio.create_task(self._ping_loop(self.heartbeat), name="streamer-client-ping")

    async def close(self) -> None:
        """Close the socket and stop reading; the owner fails what is pending."""
        self.closing = True
        if self._pinger is not None:
            self._pinger.cancel()
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=2.0)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        self._connected.clear()

    async def release(self) -> None:
        """Close the aiohttp session, if this transport made it."""
        if self._own_session and self._session is not None:
            await self._session.close()

    async def drop_connection(self) -> None:
        """Close the socket abruptly as a network failure would (tests, demos)."""
        ws = self._ws
        if ws is not None:
            transport = ws.get_extra_info("transport") if hasattr(ws, "get_extra_info") else None
            if transport is not None:
                transport.abort()
            else:  # pragma: no cover - aiohttp always exposes the transport
                await ws.close()

    def fail(self, error: StreamerError) -> None:
        """Give up: every send from now on raises; the owner fails what is pending."""
        self.closed_error = error if not self.closing else ConnectionClosedError("Client closed")
        self._on_failed(error)
        self._connected.set()  # wake senders so they see the error

    # ------------------------------------------------------------------ opening
    async def _token_value(self) -> str | None:
        if self._token is None or isinstance(self._token, str):
            return self._token
        value = await maybe_await(self._token())
        return str(value) if value else None

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        token = await self._token_value()
        headers = dict(self._headers)
        url = self.url
        if token:
            if self.token_in == "header":
                headers["Authorization"] = f"Bearer {token}"
            else:
                sep = "&" if urllib.parse.urlsplit(url).query else "?"
                url = f"{url}{sep}token={urllib.parse.quote(token)}"
        try:
            # connect_timeout bounds the TCP connect, TLS and the upgrade together: a gateway
            # that accepts and never answers must not hold connect() or a reconnect attempt.
            async with asyncio.timeout(self.connect_timeout):
                return await self._session.ws_connect(
                    url,
                    headers=headers,
                    heartbeat=self.heartbeat,
                    autoping=True,
                    max_msg_size=self.max_message_bytes,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise UnauthorizedError(f"The server refused the token: {exc.message}") from None
            if exc.status == 403:
                raise ForbiddenError(f"The server refused the connection: {exc.message}") from None
            raise ServiceUnavailableError(f"WebSocket handshake failed with HTTP {exc.status}") from None
        except TimeoutError:
            raise ServiceUnavailableError(
                f"Cannot connect to {self.url}: no answer within {self.connect_timeout:g}s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ServiceUnavailableError(f"Cannot connect to {self.url}: {exc}") from None

    # ------------------------------------------------------------------ reading
    async def _run(self) -> None:
        try:
            while True:
                ws = self._ws
                assert ws is not None
                self.last_close_reason = await self._read(ws)
                self._connected.clear()
                self.last_close_code = ws.close_code
                if self.closing:
                    return
                if not self.reconnect or ws.close_code in NO_RECONNECT_CODES:
                    message = f"Connection closed by the server (code {ws.close_code})"
                    self.fail(ConnectionClosedError(message))
                    return
                log.info("connection lost (code %s); reconnecting", ws.close_code)
                if not await self._reconnect():
                    return
                await self._on_reconnected()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave requests hanging on a reader bug
            log.exception("client reader failed")
            self.fail(InternalError(f"Client reader failed: {exc}"))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> str | None:
        """Hand over messages until the socket closes; return the server's close reason, if any."""
        silence = self.heartbeat * 2.5 if self.heartbeat else None
        while True:
            try:
                msg = await ws.receive(timeout=silence)
            except TimeoutError:
                log.warning("no message for %.1fs; treating the connection as dead", silence or 0)
                transport = ws.get_extra_info("transport")
                if transport is not None:
                    transport.abort()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), timeout=1.0)
                return None
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._hand_over(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                self._hand_over(msg.data.decode("utf-8", errors="replace"))
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                reason = (
                    msg.extra if msg.type == aiohttp.WSMsgType.CLOSE and isinstance(msg.extra, str) else None
                )
                if not ws.closed:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(), timeout=2.0)
                return reason
            elif msg.type == aiohttp.WSMsgType.ERROR:
                return None

    def _hand_over(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            log.warning("server sent a frame that is not JSON")
            return
        if isinstance(msg, dict):
            self._on_message(msg)

    # ------------------------------------------------------------------ reconnecting
    async def _reconnect(self) -> bool:
        attempt = 0
        delay = self.reconnect_delay
        hint = (
            protocol.reconnect_hint(self.last_close_reason)
            if self.last_close_code == protocol.CLOSE_GOING_AWAY
            else None
        )
        failed = self.url  # try another gateway than the one that just failed us
        while not self.closing:
            attempt += 1
            if attempt == 1 and hint is not None:
                # The draining server picked this client's moment; a little jitter on top.
                await asyncio.sleep(min(hint, self.reconnect_max_delay) + random.uniform(0, delay / 2))
            else:
                await asyncio.sleep(random.uniform(delay / 2, delay))
            self.url = random.choice([u for u in self.urls if u != failed] or self.urls)
            failed = self.url
            try:
                self._ws = await self._open()
            except (UnauthorizedError, ForbiddenError) as exc:
                log.warning("reconnect refused: %s", exc)
                self.fail(exc)
                return False
            except ServiceUnavailableError as exc:
                self.reconnect_failures += 1
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                if self.max_reconnect_attempts is not None and attempt >= self.max_reconnect_attempts:
                    self.fail(ConnectionClosedError(f"Gave up reconnecting after {attempt} attempts: {exc}"))
                    return False
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            self.reconnects += 1
            self._connected.set()
            return True
        return False

    # ------------------------------------------------------------------ sending
    async def send(self, frame: Mapping[str, Any]) -> None:
        """Send one frame, waiting through a reconnect; raises once the transport gave up."""
        text = json.dumps(frame, separators=(",", ":"))
        limit = self.max_frame_bytes
        if (
            limit is not None and (size := len(text)) > limit
        ):  # ASCII (json escapes the rest): chars are bytes
            # Sent, it would close the socket with 1009 and fail every other request on it.
            raise PayloadTooLargeError(
                f"Frame is {size} bytes; this client sends at most {limit} (max_frame_bytes)",
                details={"size": size, "limit": limit},
                request_id=frame.get("id"),
            )
        while True:
            if self.closed_error is not None:
                raise self.closed_error
            if self.closing:
                raise ConnectionClosedError("Client closed")
            await self._connected.wait()
            ws = self._ws
            if ws is None or ws.closed:
                await asyncio.sleep(0.01)
                continue
            try:
                async with self._send_lock:
                    await ws.send_str(text)
                return
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                if not self.reconnect:
                    raise ConnectionClosedError("Connection lost while sending") from None
                self._connected.clear()
                # The reader notices the closed socket and reconnects; try again then.
                await asyncio.sleep(0.01)

    async def _ping_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self._connected.is_set() and self._ws is not None and not self._ws.closed:
                with contextlib.suppress(Exception):
                    async with self._send_lock:
                        await self._ws.send_str(json.dumps({"action": protocol.PING}))
