"""``streamer handler <name or module>``: serve handler actions with the SDK's ``serve()``.

The target is looked up as :func:`streamer.sdk.load_actions` says: a ``streamer.handlers``
entry point name, ``package.module:function``, or a module with ``handlers()`` or
:class:`~streamer.sdk.Action` subclasses.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import yaml

from streamer.sdk import HandlerLoadError, load_actions, registry_document, serve

DEFAULT_PORT = 50061
DEFAULT_HTTP_PORT = 9090


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"streamer handler: {name}: expected an integer, got {raw!r}") from None


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "handler",
        help="serve handler actions (e.g. `streamer handler examples`)",
        description="Serve handler actions over gRPC. TARGET is a streamer.handlers entry point name "
        "(e.g. examples), module:function, or a module with handlers() or Action subclasses.",
    )
    p.add_argument("target", metavar="TARGET", help="entry point name, module:function or module path")
    p.add_argument("--host", default=os.environ.get("STREAMER_HOST") or "0.0.0.0", help="address to bind")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"gRPC port (STREAMER_GRPC_PORT, default {DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        default=None,
        help=f"/metrics /healthz /readyz port (STREAMER_HTTP_PORT, default {DEFAULT_HTTP_PORT}; -1: off)",
    )
    p.add_argument("--name", help="handler name (default: the entry point or module name)")
    p.add_argument(
        "--print-registry",
        metavar="HOST:PORT",
        help="print the StreamerHandler document (file registry) for this endpoint and exit",
    )


def run(args: argparse.Namespace) -> int:
    try:
        name, actions = load_actions(args.target)
    except HandlerLoadError as exc:
        print(f"streamer handler: {exc}", file=sys.stderr)
        return 2
    name = args.name or name
    if args.print_registry:
        doc = registry_document(actions, name=name, endpoint=args.print_registry)
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False, width=100))
        return 0
    port = args.port if args.port is not None else _env_int("STREAMER_GRPC_PORT", DEFAULT_PORT)
    http_port = (
        args.http_port if args.http_port is not None else _env_int("STREAMER_HTTP_PORT", DEFAULT_HTTP_PORT)
    )
    return serve(
        actions=actions, name=name, host=args.host, port=port, http_port=None if http_port < 0 else http_port
    )
