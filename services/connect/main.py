"""``streamer connect``: run one connect pod until SIGTERM/SIGINT, then drain.

Exit codes: 0 after a clean drain, 2 for a configuration error (the message names the
variable), 1 for anything else that stops the service.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from services.connect.app import ConnectService
from streamer import rpc
from streamer.auth import TokenVerifier
from streamer.config import ConfigError, Settings, load_settings
from streamer.logs import setup_logging

logger = logging.getLogger(__name__)


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a port number between 0 and 65535 (0 picks a free port)")
    return value


def _address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError("expected host:port")
    return raw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer connect",
        description="The WebSocket gateway. Every setting also comes from STREAMER_* variables; flags win.",
    )
    parser.add_argument("--host", help="address every server binds (STREAMER_HOST)")
    parser.add_argument("--port", type=_port, help="WebSocket port (STREAMER_WS_PORT; 0 picks a free one)")
    parser.add_argument("--grpc-port", type=_port, help="Connections gRPC port (STREAMER_GRPC_PORT)")
    parser.add_argument(
        "--http-port", type=_port, help="/metrics, /healthz, /readyz port (STREAMER_HTTP_PORT)"
    )
    parser.add_argument(
        "--router", type=_address, help="router gRPC address host:port (STREAMER_ROUTER_ADDRESS)"
    )
    return parser


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


async def serve(settings: Settings, *, verifier: TokenVerifier) -> int:
    """Run until a stop signal, then drain within ``drain_seconds``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    service = ConnectService(settings=settings, verifier=verifier)
    try:
        await service.start()
        await stop.wait()
        logger.info("stop signal received; draining", extra={"drain_seconds": settings.drain_seconds})
    finally:
        await service.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    logger.info("connect stopped")
    return 0


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``streamer connect`` and ``python -m services.connect``."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, message already printed)
        return int(exc.code or 0)
    try:
        settings = load_settings(
            host=args.host,
            ws_port=args.port,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            router_address=args.router,
        )
        verifier = TokenVerifier.from_settings(settings)
        rpc.configure(settings)
    except ConfigError as exc:
        print(f"streamer connect: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(service="connect", level=settings.log_level, json_format=settings.log_json)
    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            return runner.run(serve(settings, verifier=verifier))
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled inside
        return 0
    except Exception:
        logger.exception("connect failed")
        return 1
