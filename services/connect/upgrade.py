"""The upgrade: authenticate, write the record, accept the WebSocket, run it until it closes.

The token is checked *before* the 101: a refused token is a plain HTTP 401 (403 for a
tenant that is not allowed) with a JSON body, so browsers and scripts see why. The
connection record is written before the upgrade too, so a DynamoDB outage is a 503
rather than a socket nobody can reach. Once accepted, the socket is in the pod's table
(reachable through ``Connections``), on the heartbeat schedule, and read by the frame
handler until it closes; then its record and subscriptions are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.connect import metrics
from services.connect.frames import FrameHandler
from services.connect.heartbeat import HeartbeatSchedule
from services.connect.limits import CLOSE_TIMEOUT_SECONDS, FramePolicy, Strikes, TokenBucket
from services.connect.records import ConnectionRecords
from services.connect.session import ClientConnection
from services.connect.table import SocketTable
from streamer import protocol
from streamer.auth import AuthError, Identity, TokenVerifier, extract_token
from streamer.config import Settings
from streamer.logs import log_context
from streamer.store import ConnectionRecord, StoreError

log = logging.getLogger(__name__)

#: Subprotocols the server can select besides the one carrying the token: a browser
#: that offers any protocol drops the handshake when the server selects none.
KNOWN_SUBPROTOCOLS = ("streamer.v1",)
SHUTDOWN_REASON = "server shutting down"


def json_error(status: int, *, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
    return web.json_response({"error": message, "code": code, **extra}, status=status, headers=headers)


class Upgrade:
    """The ``GET /ws`` handler and the life of each socket it accepts."""

    def __init__(
        self,
        *,
        settings: Settings,
        verifier: TokenVerifier,
        records: ConnectionRecords,
        table: SocketTable,
        heartbeats: HeartbeatSchedule,
        frames: FrameHandler,
        policy: FramePolicy,
        draining: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self.records = records
        self.table = table
        self.heartbeats = heartbeats
        self.frames = frames
        self.policy = policy
        self.draining = draining
        #: The handler task of every socket still open (a drain waits for them).
        self.handlers: set[asyncio.Task[Any]] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.draining():
            return json_error(503, code=protocol.SERVICE_UNAVAILABLE, message=SHUTDOWN_REASON)
        try:
            source = extract_token(headers=request.headers, query=request.query)
            identity = await self.verifier.verify(source.token)
        except AuthError as exc:
            metrics.auth_failures_total.labels(exc.reason).inc()
            code = protocol.FORBIDDEN if exc.status == 403 else protocol.UNAUTHORIZED
            log.info("upgrade refused", extra={"reason": exc.reason, "status": exc.status})
            return json_error(exc.status, code=code, message=exc.message, reason=exc.reason)

        protocols = ((source.subprotocol,) if source.subprotocol else ()) + KNOWN_SUBPROTOCOLS
        ws = web.WebSocketResponse(
            protocols=protocols,
            autoping=False,  # pongs are seen by the heartbeat; pings answered in the read loop
            heartbeat=None,
            max_msg_size=self.policy.max_msg_size,
            # No permessage-deflate: its zlib state costs ~300 KiB per socket and CPU per
            # frame; a gateway holding many sockets spends that better elsewhere.
            compress=False,
            timeout=CLOSE_TIMEOUT_SECONDS,
        )
        if not ws.can_prepare(request).ok:
            return json_error(400, code=protocol.VALIDATION_ERROR, message="expected a WebSocket upgrade")

        cid = str(uuid.uuid4())
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        try:
            with log_context(connection_id=cid):
                return await self._accept(request, ws, cid, identity)
        finally:
            if task is not None:
                self.handlers.discard(task)

    async def _accept(
        self, request: web.Request, ws: web.WebSocketResponse, cid: str, identity: Identity
    ) -> web.StreamResponse:
        s = self.settings
        record = ConnectionRecord.new(
            connection_id=cid,
            user_id=identity.user_id,
            tenant_id=identity.tenant_id,
            endpoint=self.records.endpoint,
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
            queue_bytes_limit=s.ws_send_queue_bytes,
            bucket=TokenBucket(rate=s.ws_rate_limit, burst=s.ws_rate_burst),
            strikes=Strikes(allowed=s.ws_rate_strikes),
        )
        # In the table before the record exists: a Send racing the upgrade is queued.
        self.table.add(conn)
        try:
            await self.records.register(record)
        except StoreError:
            self.table.remove(conn)
            log.exception("could not store the connection record")
            return json_error(
                503, code=protocol.SERVICE_UNAVAILABLE, message="connection registry unavailable"
            )
        try:
            await ws.prepare(request)
        except Exception:
            self.table.remove(conn)
            await self.records.forget(cid)
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
            await self.frames.read_loop(conn)
        except Exception:
            log.exception("connection failed")
            conn.close(code=protocol.CLOSE_INTERNAL, reason="internal error", why="error", flush=False)
        finally:
            conn.closed_by_peer("client")
            await conn.finish()
            self.table.remove(conn)
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
            await self.records.forget(cid)
        return ws
