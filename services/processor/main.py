"""``streamer processor``: consume the requests stream until SIGTERM/SIGINT, then drain.

Handlers come from ``--registry``/``STREAMER_REGISTRY_FILE`` (a YAML file of
StreamerHandler documents) or, when neither is set, from a watch of the cluster's
Ready StreamerHandler resources. ``/metrics``, ``/healthz`` and ``/readyz`` are
served on ``--http-port``/``STREAMER_HTTP_PORT``.

On SIGTERM the processor stops reading and releases its shard leases (another
replica reads on at once), hands queued requests back, lets running handlers
finish for ``STREAMER_DRAIN_SECONDS``, then cancels the rest and hands them back
(PENDING at the same attempt). See :mod:`services.processor.service`.

Exit codes: 0 after a clean drain, 2 for a configuration error (the message names
the variable), 1 for anything else that stops the service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

from services.processor.service import Processor
from streamer import rpc
from streamer.config import ConfigError, Settings, load_settings
from streamer.logs import setup_logging
from streamer.metrics import Health, start_http
from streamer.registry import Registry, RegistryError

log = logging.getLogger("services.processor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer processor",
        description="The DynamoDB Streams consumer that runs async requests. "
        "Every setting also comes from STREAMER_* variables; flags win.",
    )
    parser.add_argument("--http-port", type=int, help="/metrics, /healthz, /readyz port (STREAMER_HTTP_PORT)")
    parser.add_argument(
        "--grpc-port", type=int, help="Processor.Offer port for direct dispatch (STREAMER_GRPC_PORT)"
    )
    parser.add_argument("--registry", help="YAML file of StreamerHandler documents (STREAMER_REGISTRY_FILE)")
    parser.add_argument("--worker-id", help="lease owner name (STREAMER_WORKER_ID; default host-pid-random)")
    return parser


def make_registry(settings: Settings) -> Registry:
    """The file registry when a file is configured, else the Kubernetes watch."""
    if settings.registry_file:
        from streamer.registry.file import FileRegistry

        return FileRegistry(settings.registry_file)
    from streamer.registry.kubernetes import KubernetesRegistry  # only in a cluster

    return KubernetesRegistry(namespace=settings.namespace)


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


async def serve(settings: Settings, *, registry: Registry) -> int:
    """Run until a stop signal, then drain within ``drain_seconds``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    health = Health()
    runner, port = await start_http(health=health, host=settings.host, port=settings.http_port)
    log.info("observability endpoints up", extra={"http_port": port})
    processor: Processor | None = None
    try:
        await registry.start()
        processor = Processor(
            settings=settings, registry=registry, health=health, grpc_port=settings.grpc_port
        )
        await processor.start()
        await stop.wait()
        log.info("stop signal received; draining", extra={"drain_seconds": settings.drain_seconds})
    finally:
        health.set_not_ready("stopping")
        if processor is not None:
            await processor.stop()
        with contextlib.suppress(Exception):
            await registry.stop()
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("processor exited")
    return 0


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``streamer processor`` and ``python -m services.processor``."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            registry_file=args.registry,
            worker_id=args.worker_id,
        )
        rpc.configure(settings)
    except ConfigError as exc:
        print(f"streamer processor: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(service="processor", level=settings.log_level, json_format=settings.log_json)
    try:
        registry = make_registry(settings)
    except RegistryError as exc:
        print(f"streamer processor: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            return runner.run(serve(settings, registry=registry))
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled inside
        return 0
    except RegistryError as exc:
        print(f"streamer processor: {exc}", file=sys.stderr)
        return 2
    except Exception:
        log.exception("processor failed")
        return 1
