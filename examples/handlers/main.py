"""Serve the example handlers: ``streamer handler examples`` or ``python -m examples.handlers.main``.

``--print-registry HOST:PORT`` prints the StreamerHandler document for the file
registry instead of serving; ``examples/registry.yaml`` is that output for
``127.0.0.1:50061`` (a test keeps the two in step).
"""

from __future__ import annotations

import argparse
import os
import sys

import yaml

from examples.handlers import NAME, handlers
from streamer.sdk import registry_document, serve

DEFAULT_PORT = 50061
DEFAULT_HTTP_PORT = 9090
HEADER = (
    "# The example handlers as the file registry sees them (STREAMER_REGISTRY_FILE).\n"
    "# Generated from examples/handlers/actions.py; regenerate with\n"
    "#   python -m examples.handlers.main --print-registry 127.0.0.1:50061 > examples/registry.yaml\n"
)


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() else default


def registry_yaml(endpoint: str) -> str:
    """The registry file text for the examples served at ``endpoint``."""
    doc = registry_document(handlers(), name=NAME, endpoint=endpoint)
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=100)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamer handler examples", description="Serve the example handlers.")
    p.add_argument("--host", default=os.environ.get("STREAMER_HOST") or "0.0.0.0", help="address to bind")
    p.add_argument(
        "--port",
        type=int,
        default=_env_port("STREAMER_GRPC_PORT", DEFAULT_PORT),
        help=f"gRPC port (STREAMER_GRPC_PORT, default {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=_env_port("STREAMER_HTTP_PORT", DEFAULT_HTTP_PORT),
        help=f"/metrics /healthz /readyz port (STREAMER_HTTP_PORT, default {DEFAULT_HTTP_PORT}; -1: off)",
    )
    p.add_argument("--name", default=NAME, help="handler name reported by Describe")
    p.add_argument(
        "--print-registry",
        metavar="HOST:PORT",
        help="print the StreamerHandler document for this endpoint and exit",
    )
    return p


def run(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    args = parser().parse_args(argv)
    if args.print_registry:
        sys.stdout.write(registry_yaml(args.print_registry))
        return 0
    http_port = None if args.http_port < 0 else args.http_port
    return serve(actions=handlers(), name=args.name, host=args.host, port=args.port, http_port=http_port)


if __name__ == "__main__":
    raise SystemExit(run())
