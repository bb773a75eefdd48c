"""The WebSocket gateway: upgrade, per-message flow, and the service's lifecycle.

:class:`ConnectService` owns everything one connect pod runs: the aiohttp app with
``/ws`` (and ``/healthz``, ``/readyz`` on the same port for load-balancer probes; ``/metrics``
only on the internal http port),
the observability port, the gRPC ``Connections`` server, the router client and the
local socket table. Tests start it in-process; :mod:`services.connect.main` runs it
as ``streamer connect``.

The upgrade is authenticated *before* the 101: a refused token is a plain HTTP 401
(403 for a tenant that is not allowed) with a JSON body, so browsers and scripts see
why. The connection record is written before the upgrade too, so a DynamoDB outage is
a 503 rather than a socket nobody can reach.

Per message: size policy, token bucket, then parse; ``$ping`` is answered here, every
other valid message becomes one ``Route`` call running concurrently with the others
of the same connection (capped at :data:`~services.connect.limits.MAX_IN_FLIGHT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http_websocket import WebSocketError

from services.connect import metrics
from services.connect.heartbeat import HeartbeatSchedule
from services.connect.limits import (
    CLOSE_TIMEOUT_SECONDS,
    MAX_IN_FLIGHT,
    FramePolicy,
    FrameVerdict,
    Strikes,
    TokenBucket,
    utf8_size,
)
from services.connect.router_client import RouterClient, RouterUnavailable
from services.connect.servicer import SERVICE_NAME, ConnectionsServicer
from services.connect.session import ClientConnection
from streamer import protocol, rpc, tracing
from streamer.api.v1 import connections_pb2_grpc
from streamer.auth import AuthError, Identity, TokenVerifier, extract_token
from streamer.config import Settings
from streamer.logs import log_context
from streamer.metrics import Health, http_routes, start_http
from streamer.store import ConnectionRecord, NotFound, Store, StoreError

log = logging.getLogger(__name__)

#: Subprotocols the server can select besides the one carrying the token: a browser
#: that offers any protocol drops the handshake when the server selects none.
KNOWN_SUBPROTOCOLS = ("streamer.v1",)
SHUTDOWN_REASON = "server shutting down"


def _json_error(status: int, *, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
    return web.json_response({"error": message, "code": code, **extra}, status=status, headers=headers)


class ConnectService:
    """One connect pod. ``await start()``, then ``await stop()`` (which drains first)."""

    def __init__(
        self, *, settings: Settings, verifier: TokenVerifier | None = None, store: Store | None = None
    ) -> None:
        self.settings = settings
        self.health = Health()
        self.connections: dict[str, ClientConnection] = {}
        self.frame_policy = FramePolicy(limit=settings.ws_max_frame_bytes)
        self.heartbeats = HeartbeatSchedule(
            interval=settings.ws_heartbeat_seconds, missed_pongs=settings.ws_missed_pongs
        )
        self.draining = False
        self.ws_port = 0
        self.grpc_port = 0
        self.http_port = 0
        self.endpoint = ""
        self._verifier = verifier
        self._store = store
        self._stack = contextlib.AsyncExitStack()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._registered: set[str] = set()  # connection ids whose record this pod wrote and not yet deleted
        self._runner: web.AppRunner | None = None
        self._http_runner: web.AppRunner | None = None
        self._grpc: Any = None
        self._grpc_health: Any = None
        self._router: RouterClient | None = None
        self._drained = False
        self._stopped = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def store(self) -> Store:
        assert self._store is not None, "start() first"
        return self._store

    @property
    def verifier(self) -> TokenVerifier:
        assert self._verifier is not None, "start() first"
        return self._verifier

    async def start(self) -> None:
        s = self.settings
        if self._verifier is None:
            self._verifier = TokenVerifier.from_settings(s)  # ConfigError for a missing key
        if self._store is None:
            self._store = await self._stack.enter_async_context(Store.open(settings=s))

        self._grpc = rpc.create_server(max_message_bytes=s.grpc_max_message_bytes)
        connections_pb2_grpc.add_ConnectionsServicer_to_server(
            ConnectionsServicer(self.connections), self._grpc
        )
        self._grpc_health = rpc.finish_server(self._grpc, service_names=[SERVICE_NAME])
        self.grpc_port = rpc.bind(self._grpc, host=s.host, port=s.grpc_port)
        await self._grpc.start()
        # The advertised address must carry the bound port (grpc_port 0 picks a free one).
        self.endpoint = dataclasses.replace(s, grpc_port=self.grpc_port).grpc_advertise()

        self._router = RouterClient(
            address=s.router_address,
            timeout=s.ws_route_timeout_seconds,
            max_message_bytes=s.grpc_max_message_bytes,
        )

        app = web.Application()
        # The public port gets the probes but not /metrics: metric labels describe the
        # deployment (tenants' traffic, failure reasons) and belong on the internal port.
        public = [r for r in http_routes(self.health) if r.path != "/metrics"]  # type: ignore[attr-defined]
        app.add_routes([web.get("/ws", self.handle_ws), *public])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.ws_port)
        await site.start()
        self.ws_port = _bound_port(site, s.ws_port)
        if s.http_port != s.ws_port or s.http_port == 0:
            self._http_runner, self.http_port = await start_http(
                health=self.health, host=s.host, port=s.http_port
            )
        else:
            self.http_port = self.ws_port
        self.heartbeats.start()
        self.health.checks.append(self._dynamodb_ready)
        self.health.set_ready()
        await rpc.set_serving(self._grpc_health, service_names=[SERVICE_NAME], serving=True)
        log.info(
            "connect ready",
            extra={
                "ws_port": self.ws_port,
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "endpoint": self.endpoint,
            },
        )

    async def drain(self, *, timeout: float | None = None) -> None:
        """Not ready, stop accepting, close every socket (1001), delete their records.

        Each close reason carries a reconnect hint (``reconnect_after_ms=N``, N random
        over ``open sockets / STREAMER_WS_RECONNECT_RATE`` seconds, at most
        ``STREAMER_WS_RECONNECT_MAX_SECONDS``): clients that honour it come back to the
        remaining pods spread out rather than in one burst.

        Returns within ``timeout`` (default: most of ``drain_seconds``, keeping the rest
        for :meth:`stop`'s own cleanup). gRPC keeps serving meanwhile, so progress for
        a closing socket still finds it until the socket is gone.
        """
        if self._drained:
            return
        self._drained = True
        loop = asyncio.get_running_loop()
        budget = timeout if timeout is not None else _drain_budget(self.settings.drain_seconds)
        deadline = loop.time() + budget
        self.draining = True
        self.health.set_not_ready("draining")
        if self._grpc_health is not None:
            await rpc.set_serving(self._grpc_health, service_names=[SERVICE_NAME], serving=False)
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
        open_now = list(self.connections.values())
        window = reconnect_window(
            len(open_now), rate=self.settings.ws_reconnect_rate, cap=self.settings.ws_reconnect_max_seconds
        )
        log.info(
            "draining",
            extra={
                "connections": len(open_now),
                "budget_seconds": round(budget, 3),
                "reconnect_window_seconds": round(window, 3),
            },
        )
        for conn in open_now:
            # Each client is told its own moment to come back, spread over the window, so
            # the pods that remain see the drained sockets arrive at `rate`, not at once.
            reason = protocol.drain_close_reason(SHUTDOWN_REASON, reconnect_after=random.uniform(0, window))
            conn.close(code=protocol.CLOSE_GOING_AWAY, reason=reason, why="shutdown", flush=True)
        handlers = [t for t in self._handlers if not t.done()]
        if handlers:
            # Keep a slice of the budget for deleting whatever is left.
            wait = max(0.0, (deadline - loop.time()) * 0.8)
            _, pending = await asyncio.wait(handlers, timeout=wait)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()) / 2)
        leftovers = list(self._registered)
        if leftovers:
            log.warning("deleting records of connections not closed in time", extra={"count": len(leftovers)})
            remaining = max(0.1, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(self._forget(cid) for cid in leftovers), return_exceptions=True),
                    timeout=remaining,
                )

    async def stop(self) -> None:
        """Drain (if not done yet), then stop every server and close every client."""
        if self._stopped:
            return
        self._stopped = True
        await self.drain()
        await self.heartbeats.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self._router is not None:
            await self._router.close()
        if self._verifier is not None:
            await self._verifier.close()
        await self._stack.aclose()

    async def _dynamodb_ready(self) -> bool:
        await asyncio.wait_for(
            self.store.client.describe_table(TableName=self.store.connections.table), timeout=2.0
        )
        return True

    # ------------------------------------------------------------------ upgrade

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            return _json_error(503, code=protocol.SERVICE_UNAVAILABLE, message=SHUTDOWN_REASON)
        try:
            source = extract_token(headers=request.headers, query=request.query)
            identity = await self.verifier.verify(source.token)
        except AuthError as exc:
            metrics.auth_failures_total.labels(exc.reason).inc()
            code = protocol.FORBIDDEN if exc.status == 403 else protocol.UNAUTHORIZED
            log.info("upgrade refused", extra={"reason": exc.reason, "status": exc.status})
            return _json_error(exc.status, code=code, message=exc.message, reason=exc.reason)

        protocols = ((source.subprotocol,) if source.subprotocol else ()) + KNOWN_SUBPROTOCOLS
        ws = web.WebSocketResponse(
            protocols=protocols,
            autoping=False,  # pongs are seen by the heartbeat; pings answered in the read loop
            heartbeat=None,
            max_msg_size=self.frame_policy.max_msg_size,
            # No permessage-deflate: its zlib state costs ~300 KiB per socket and CPU per
            # frame; a gateway holding many sockets spends that better elsewhere.
            compress=False,
            timeout=CLOSE_TIMEOUT_SECONDS,
        )
        if not ws.can_prepare(request).ok:
            return _json_error(400, code=protocol.VALIDATION_ERROR, message="expected a WebSocket upgrade")

        cid = str(uuid.uuid4())
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            with log_context(connection_id=cid):
                return await self._accept(request, ws, cid, identity)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _accept(
        self, request: web.Request, ws: web.WebSocketResponse, cid: str, identity: Identity
    ) -> web.StreamResponse:
        s = self.settings
        record = ConnectionRecord.new(
            connection_id=cid,
            user_id=identity.user_id,
            tenant_id=identity.tenant_id,
            endpoint=self.endpoint,
            metadata={
                "user_agent": request.headers.get("User-Agent", ""),
                "source_ip": request.remote or "",
                "permissions": list(identity.permissions),
            },
        )
        conn = ClientConnection(
            record=record,
            identity=identity,
            ws=ws,
            queue_limit=s.ws_send_queue,
            bucket=TokenBucket(rate=s.ws_rate_limit, burst=s.ws_rate_burst),
            strikes=Strikes(allowed=s.ws_rate_strikes),
        )
        # In the table before the record exists: a Send racing the upgrade is queued.
        self.connections[cid] = conn
        try:
            await self.store.connections.put(record)
        except StoreError:
            self.connections.pop(cid, None)
            log.exception("could not store the connection record")
            return _json_error(
                503, code=protocol.SERVICE_UNAVAILABLE, message="connection registry unavailable"
            )
        self._registered.add(cid)
        try:
            await ws.prepare(request)
        except Exception:
            self.connections.pop(cid, None)
            await self._forget(cid)
            raise

        metrics.connections_total.inc()
        metrics.active_connections.inc()
        log.info("connected", extra={"user_id": identity.user_id, "tenant_id": identity.tenant_id})
        conn.start(
            transport=request.transport,
            expires_in=(
                None
                if identity.expires_at is None
                else identity.expires_at + s.jwt_leeway_seconds - time.time()
            ),
        )
        self.heartbeats.add(conn)
        try:
            await self._read_loop(conn)
        except Exception:
            log.exception("connection failed")
            conn.close(code=protocol.CLOSE_INTERNAL, reason="internal error", why="error", flush=False)
        finally:
            conn.closed_by_peer("client")
            await conn.finish()
            self.connections.pop(cid, None)
            metrics.active_connections.dec()
            metrics.disconnects_total.labels(conn.disconnect_reason).inc()
            metrics.connection_duration_seconds.observe(conn.duration)
            log.info(
                "disconnected",
                extra={
                    "reason": conn.disconnect_reason,
                    "code": conn.close_code if conn.close_code is not None else ws.close_code,
                    "duration_seconds": round(conn.duration, 3),
                },
            )
            await self._forget(cid)
        return ws

    async def _forget(self, cid: str) -> None:
        """Delete the subscriptions, then the record (only if it still points here).

        Subscriptions first, so whoever sees the record gone also sees them gone.
        """
        try:
            await self.store.subscriptions.delete_for_connection(cid)
        except StoreError:
            log.exception("could not delete the connection's subscriptions; their TTL will")
        try:
            await self.store.connections.delete(cid, endpoint=self.endpoint)
        except StoreError:
            log.exception("could not delete the connection record; its TTL will")
        self._registered.discard(cid)

    # ------------------------------------------------------------------ messages

    async def _read_loop(self, conn: ClientConnection) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                self._on_frame(conn, msg.data, utf8_size(msg.data))
            elif kind is WSMsgType.BINARY:
                self._on_frame(conn, msg.data, len(msg.data))
            elif kind is WSMsgType.PING:
                conn.alive()
                self._maybe_touch(conn)
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.pong(msg.data)
            elif kind is WSMsgType.PONG:
                conn.alive()
                self._maybe_touch(conn)
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

    def _on_frame(self, conn: ClientConnection, data: str | bytes, size: int) -> None:
        """Handle one data frame without awaiting (routes run as their own tasks)."""
        metrics.messages_in_total.inc()
        metrics.bytes_in_total.inc(size)
        if conn.closing:  # a frame that crossed our close frame: nothing can be answered
            return
        conn.alive()
        self._maybe_touch(conn)
        verdict = self.frame_policy.check(size)
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
                    request_id=protocol.peek_request_id(data, max_bytes=self.settings.ws_max_frame_bytes),
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
                    f"Frame is {size} bytes; the limit is {self.frame_policy.limit}",
                    details={"size": size, "limit": self.frame_policy.limit},
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
        task = asyncio.create_task(self._route(conn, message, request_id))
        conn.inflight.add(task)
        task.add_done_callback(conn.inflight.discard)

    async def _route(self, conn: ClientConnection, message: protocol.ClientMessage, request_id: str) -> None:
        assert self._router is not None
        conn.routing_started(request_id)
        try:
            await self._route_once(conn, message, request_id)
        finally:
            conn.routing_done(request_id)

    async def _route_once(
        self, conn: ClientConnection, message: protocol.ClientMessage, request_id: str
    ) -> None:
        assert self._router is not None
        with (
            log_context(request_id=request_id),
            tracing.frame_span(
                message.action,
                request_id=request_id,
                metadata=message.metadata,
                connection_id=conn.connection_id,
            ),
        ):
            started = time.perf_counter()
            try:
                frames = await self._router.route(
                    connection_id=conn.connection_id,
                    identity=conn.identity,
                    message=message,
                    request_id=request_id,
                )
            except RouterUnavailable as exc:
                metrics.route_duration_seconds.labels("unavailable").observe(time.perf_counter() - started)
                log.warning("router unavailable", extra={"grpc_code": exc.code, "action": message.action})
                conn.send_message(
                    protocol.error_message(
                        protocol.SERVICE_UNAVAILABLE,
                        "The service is temporarily unavailable; try again",
                        request_id=request_id,
                        retryable=True,
                    )
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never leave a request unanswered: a bug here must not hang the client.
                metrics.route_duration_seconds.labels("error").observe(time.perf_counter() - started)
                log.exception("routing failed", extra={"action": message.action})
                conn.send_message(
                    protocol.error_message(
                        protocol.INTERNAL_ERROR, "The request could not be routed", request_id=request_id
                    )
                )
                return
            metrics.route_duration_seconds.labels("ok").observe(time.perf_counter() - started)
            for frame in frames:
                conn.send_text(frame.decode("utf-8", errors="replace"))

    def _maybe_touch(self, conn: ClientConnection) -> None:
        if conn.touch_due(self.settings.ws_touch_seconds):
            conn.spawn(self._touch(conn))

    async def _touch(self, conn: ClientConnection) -> None:
        """Refresh last-seen and the TTL; re-register a record someone deleted as stale."""
        try:
            await self.store.connections.touch(conn.connection_id)
        except NotFound:
            if not conn.closing:
                log.warning("connection record vanished while the socket is open; writing it again")
                now = time.time()
                record = dataclasses.replace(
                    conn.record, last_seen=now, ttl=int(now + (conn.record.ttl - conn.record.connected_at))
                )
                with contextlib.suppress(StoreError):
                    await self.store.connections.put(record)
        except StoreError:
            log.warning("could not refresh the connection record", exc_info=True)
        finally:
            conn.touching = False


def _bound_port(site: web.TCPSite, requested: int) -> int:
    server = site._server
    if server is not None and getattr(server, "sockets", None):
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr,attr-defined]
    return requested


def reconnect_window(connections: int, *, rate: float, cap: float) -> float:
    """Seconds over which ``connections`` drained sockets should come back (0: no hint)."""
    if rate <= 0 or connections <= 0:
        return 0.0
    return min(cap, connections / rate)


def _drain_budget(drain_seconds: float) -> float:
    """Most of the grace period for closing sockets; the rest for stopping servers."""
    return max(0.1, drain_seconds - min(2.0, drain_seconds * 0.25))
