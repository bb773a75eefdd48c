"""``streamer connect``: run one connect pod until SIGTERM/SIGINT, then drain.

Signals, drain and exit codes (0 after a clean drain, 2 for a configuration error
naming the variable, 1 for anything else): :mod:`streamer.runtime`.
"""

from __future__ import annotations

import argparse

from services.connect.service import ConnectService
from streamer.auth import TokenVerifier
from streamer.config import Settings, load_settings
from streamer.runtime import run_service


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


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        host=args.host,
        ws_port=args.port,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        router_address=args.router,
    )


def _build(settings: Settings, args: argparse.Namespace) -> ConnectService:
    return ConnectService(settings=settings, verifier=TokenVerifier.from_settings(settings))


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``streamer connect`` and ``python -m services.connect``."""
    return run_service("connect", argv, parser=build_parser(), settings=_settings, build=_build)
