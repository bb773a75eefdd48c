"""The router service object: gRPC Router plus /metrics /healthz /readyz, ``start()`` / ``stop()``.

SIGTERM (see :mod:`streamer.runtime`) marks it not ready, lets calls in flight finish
for ``STREAMER_DRAIN_SECONDS``, then stops.
"""

from __future__ import annotations

import contextlib
import logging
import os

from services.router.publish import Publisher
from services.router.route import Router
from services.router.servicer import SERVICE_NAME, RouterServicer
from services.router.submit import Submitter
from streamer import rpc
from streamer.api.v1 import router_pb2_grpc
from streamer.callers import CallerPolicy
from streamer.config import Settings
from streamer.delivery import Delivery
from streamer.metrics import Health, start_http
from streamer.registry import Registry
from streamer.store import Store
from streamer.store.queues import QueuedRequests

log = logging.getLogger(__name__)


def default_port(settings: Settings, env: dict[str, str] | os._Environ[str] | None = None) -> int:
    """``STREAMER_GRPC_PORT`` when set, else the port of ``STREAMER_ROUTER_ADDRESS`` (50052)."""
    source = os.environ if env is None else env
    if source.get("STREAMER_GRPC_PORT", "").strip():
        return settings.grpc_port
    tail = settings.router_address.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 50052


def route_queues(store: Store, registry: Registry) -> None:
    """Send each action's requests to its handler's queue: the shared table, or the
    handler's dedicated one (``status.queue.table``), looked up per request."""

    def table_of(action: str) -> str:
        spec = registry.lookup(action)
        return spec.queue_table if spec is not None else ""

    def tables() -> set[str]:
        return {spec.queue_table for spec in registry.actions() if spec.queue_table}

    store.requests = QueuedRequests(store.client, store.requests.table, table_of=table_of, tables=tables)


class RouterService:
    """The whole router in one object: ``await start()``, ``await stop()``."""

    def __init__(
        self, *, settings: Settings, registry: Registry, host: str, port: int, http_port: int | None
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.host = host
        self.port = port
        self.http_port = http_port
        self.health = Health()
        self.router: Router | None = None
        self._stack = contextlib.AsyncExitStack()
        self._server: rpc.aio.Server | None = None
        self._health_servicer: object | None = None

    async def start(self) -> int:
        """Open the store, load the registry, serve; returns the bound gRPC port."""
        try:
            await self.registry.start()
            self._stack.push_async_callback(self.registry.stop)
            store = await self._stack.enter_async_context(Store.open(settings=self.settings))
            route_queues(store, self.registry)
            delivery = Delivery(store=store, settings=self.settings)
            self._stack.push_async_callback(delivery.close)
            self.router = Router(registry=self.registry, store=store, settings=self.settings)
            self._stack.push_async_callback(self.router.close)
            gate = CallerPolicy.from_settings(self.settings)
            if not gate.enforced:
                log.warning(
                    "no STREAMER_CALLER_POLICY: every peer that reaches this port may Route, Publish and "
                    "Submit for any user of any tenant (docs/backends.md)"
                )
            servicer = RouterServicer(
                router=self.router,
                publisher=Publisher(delivery=delivery, store=store),
                submitter=Submitter(router=self.router, store=store, delivery=delivery),
                gate=gate,
            )
            server = rpc.create_server(max_message_bytes=self.settings.grpc_max_message_bytes)
            router_pb2_grpc.add_RouterServicer_to_server(servicer, server)
            health_servicer = rpc.finish_server(server, service_names=[SERVICE_NAME])
            self.port = rpc.bind(server, host=self.host, port=self.port)
            await server.start()
            self._server, self._health_servicer = server, health_servicer
            await rpc.set_serving(health_servicer, service_names=[SERVICE_NAME], serving=True)
            if self.http_port is not None:
                runner, self.http_port = await start_http(
                    health=self.health, host=self.host, port=self.http_port
                )
                self._stack.push_async_callback(runner.cleanup)
            self.health.checks.append(store.ping)
            self.health.set_ready()
        except BaseException:
            await self._stack.aclose()
            raise
        log.info(
            "router serving on %s:%d", self.host, self.port, extra={"actions": len(self.registry.actions())}
        )
        return self.port

    async def stop(self, *, grace: float | None = None) -> None:
        """Not ready first (load balancers stop sending), then drain, then close."""
        self.health.set_not_ready("draining")
        if self._health_servicer is not None:
            with contextlib.suppress(Exception):
                await rpc.set_serving(self._health_servicer, service_names=[SERVICE_NAME], serving=False)  # type: ignore[arg-type]
        if self._server is not None:
            await self._server.stop(self.settings.drain_seconds if grace is None else grace)
            self._server = None
        await self._stack.aclose()
