"""``streamer router``: the router service (gRPC Router plus /metrics /healthz /readyz).

Handlers come from ``--registry``/``STREAMER_REGISTRY_FILE`` (a YAML file of
StreamerHandler documents) or, when neither is set, from a watch of the cluster's
Ready StreamerHandler resources. SIGTERM marks the service not ready, lets calls in
flight finish for ``STREAMER_DRAIN_SECONDS``, then stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from services.router.publish import Publisher
from services.router.route import Router
from services.router.servicer import SERVICE_NAME, RouterServicer
from services.router.submit import Submitter
from streamer import rpc
from streamer.api.v1 import router_pb2_grpc
from streamer.config import ConfigError, Settings, load_settings
from streamer.delivery import Delivery
from streamer.logs import setup_logging
from streamer.metrics import Health, start_http
from streamer.registry import Registry, RegistryError
from streamer.registry.file import FileRegistry
from streamer.store import Store

log = logging.getLogger("services.router")


def default_port(settings: Settings, env: dict[str, str] | os._Environ[str] | None = None) -> int:
    """``STREAMER_GRPC_PORT`` when set, else the port of ``STREAMER_ROUTER_ADDRESS`` (50052)."""
    source = os.environ if env is None else env
    if source.get("STREAMER_GRPC_PORT", "").strip():
        return settings.grpc_port
    tail = settings.router_address.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 50052


def make_registry(settings: Settings) -> Registry:
    """The file registry when a file is configured, else the Kubernetes watch."""
    if settings.registry_file:
        return FileRegistry(settings.registry_file)
    from streamer.registry.kubernetes import KubernetesRegistry  # only in a cluster

    return KubernetesRegistry(namespace=settings.namespace)


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
            delivery = Delivery(store=store, settings=self.settings)
            self._stack.push_async_callback(delivery.close)
            self.router = Router(registry=self.registry, store=store, settings=self.settings)
            self._stack.push_async_callback(self.router.close)
            servicer = RouterServicer(
                router=self.router,
                publisher=Publisher(delivery=delivery, store=store),
                submitter=Submitter(router=self.router, store=store, delivery=delivery),
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamer router", description="Run the router service.")
    p.add_argument("--host", help="address to bind (STREAMER_HOST, default 0.0.0.0)")
    p.add_argument(
        "--port", type=int, help="gRPC port (STREAMER_GRPC_PORT, else the port of STREAMER_ROUTER_ADDRESS)"
    )
    p.add_argument(
        "--http-port", type=int, help="/metrics /healthz /readyz port (STREAMER_HTTP_PORT, default 9090)"
    )
    p.add_argument("--registry", help="YAML file of StreamerHandler documents (STREAMER_REGISTRY_FILE)")
    return p


async def _serve(service: RouterService) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except (RegistryError, OSError) as exc:
        print(f"streamer router: {exc}", file=sys.stderr)
        return 1
    await stop.wait()
    log.info("router stopping")
    await service.stop()
    return 0


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``streamer router``; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        settings = load_settings(host=args.host, http_port=args.http_port, registry_file=args.registry)
        rpc.configure(settings)
    except ConfigError as exc:
        print(f"streamer router: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(service="router", level=settings.log_level, json_format=settings.log_json)
    port = args.port if args.port is not None else default_port(settings)
    try:
        registry = make_registry(settings)
    except RegistryError as exc:
        print(f"streamer router: {exc}", file=sys.stderr)
        return 2
    service = RouterService(
        settings=settings, registry=registry, host=settings.host, port=port, http_port=settings.http_port
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(_serve(service))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(service))
