"""Routing a client's message to the router: one ``Route`` call per message, its answer sent back.

Messages of one connection are routed concurrently (a slow sync request never holds up
a ``$cancel`` behind it). While a message's ``Route`` call is on its way, frames pushed
for the same request wait for its answer (see ``ClientConnection.push_text``). Every
failure is answered on the socket — the router unreachable or past the deadline is a
retryable ``SERVICE_UNAVAILABLE``, a bug here an ``INTERNAL_ERROR`` — so no request is
ever left unanswered.
"""

from __future__ import annotations

import asyncio
import logging
import time

from services.connect import metrics
from services.connect.router_client import RouterClient, RouterUnavailable
from services.connect.session import ClientConnection
from streamer import protocol, tracing
from streamer.logs import log_context

log = logging.getLogger(__name__)


class Routing:
    """Runs ``Route`` for the messages of every socket of this pod."""

    def __init__(self, router: RouterClient) -> None:
        self.router = router

    def dispatch(self, conn: ClientConnection, message: protocol.ClientMessage, request_id: str) -> None:
        """Start routing ``message`` as its own task (cancelled when the socket closes)."""
        task = asyncio.create_task(self.route(conn, message, request_id))
        conn.inflight.add(task)
        task.add_done_callback(conn.inflight.discard)

    async def route(self, conn: ClientConnection, message: protocol.ClientMessage, request_id: str) -> None:
        conn.routing_started(request_id)
        try:
            await self._route_once(conn, message, request_id)
        finally:
            conn.routing_done(request_id)

    async def _route_once(
        self, conn: ClientConnection, message: protocol.ClientMessage, request_id: str
    ) -> None:
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
                frames = await self.router.route(
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
