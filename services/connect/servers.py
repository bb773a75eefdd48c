"""The servers one connect pod runs, started and stopped in order.

- gRPC: ``streamer.v1.Connections`` (plus health and reflection) on ``STREAMER_GRPC_PORT``;
  the address it advertises (with the bound port when 0 was asked) is every record's
  ``endpoint``.
- WebSocket: ``/ws`` with ``/healthz`` and ``/readyz`` on the same port for
  load-balancer probes — but not ``/metrics``: metric labels describe the deployment
  (tenants' traffic, failure reasons) and belong on the internal port.
- internal HTTP: ``/metrics``, ``/healthz``, ``/readyz`` on ``STREAMER_HTTP_PORT``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.connect.servicer import SERVICE_NAME
from streamer import rpc
from streamer.api.v1 import connections_pb2_grpc
from streamer.config import Settings
from streamer.metrics import Health, http_routes, start_http

WsHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Servers:
    """gRPC, WebSocket and internal HTTP servers of one pod."""

    def __init__(self, *, settings: Settings, health: Health) -> None:
        self.settings = settings
        self.health = health
        self.ws_port = 0
        self.grpc_port = 0
        self.http_port = 0
        self.endpoint = ""
        self._grpc: Any = None
        self._grpc_health: Any = None
        self._runner: web.AppRunner | None = None
        self._http_runner: web.AppRunner | None = None

    async def start_grpc(self, servicer: connections_pb2_grpc.ConnectionsServicer) -> str:
        """Serve ``Connections``; returns the advertised endpoint."""
        s = self.settings
        self._grpc = rpc.create_server(max_message_bytes=s.grpc_max_message_bytes)
        connections_pb2_grpc.add_ConnectionsServicer_to_server(servicer, self._grpc)
        self._grpc_health = rpc.finish_server(self._grpc, service_names=[SERVICE_NAME])
        self.grpc_port = rpc.bind(self._grpc, host=s.host, port=s.grpc_port)
        await self._grpc.start()
        # The advertised address must carry the bound port (grpc_port 0 picks a free one).
        self.endpoint = dataclasses.replace(s, grpc_port=self.grpc_port).grpc_advertise()
        return self.endpoint

    async def start_web(self, ws_handler: WsHandler) -> None:
        s = self.settings
        app = web.Application()
        public = [r for r in http_routes(self.health) if r.path != "/metrics"]  # type: ignore[attr-defined]
        app.add_routes([web.get("/ws", ws_handler), *public])
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.ws_port)
        await site.start()
        self.ws_port = bound_port(site, s.ws_port)
        if s.http_port != s.ws_port or s.http_port == 0:
            self._http_runner, self.http_port = await start_http(
                health=self.health, host=s.host, port=s.http_port
            )
        else:
            self.http_port = self.ws_port

    async def set_serving(self, serving: bool) -> None:
        """gRPC health of ``Connections`` (connect's readiness for the other services)."""
        if self._grpc_health is not None:
            await rpc.set_serving(self._grpc_health, service_names=[SERVICE_NAME], serving=serving)

    async def stop_accepting(self) -> None:
        """Close the WebSocket port to new connections (open sockets stay)."""
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http_runner is not None:
            await self._http_runner.cleanup()


def bound_port(site: web.TCPSite, requested: int) -> int:
    server = site._server
    if server is not None and getattr(server, "sockets", None):
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr,attr-defined]
    return requested
