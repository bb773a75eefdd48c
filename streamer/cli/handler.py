"""``streamer handler <name or module>``: serve handler actions with the SDK's ``serve()``.

The target is looked up in this order:

1. a name from the ``streamer.handlers`` entry points (``examples`` ships with Streamer);
   the entry point is a function returning :class:`~streamer.sdk.Action` instances;
2. ``package.module:function`` — that function, called, returns the actions;
3. ``package.module`` — its ``handlers()`` function if it has one, else one instance of
   every :class:`~streamer.sdk.Action` subclass defined in that module.

Entry points let a handler package be served by name from the same image without this
library importing it (the layering contract).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import yaml

from streamer.sdk import Action, registry_document, serve

DEFAULT_PORT = 50061
DEFAULT_HTTP_PORT = 9090


class HandlerLoadError(Exception):
    """The target names no entry point or module with actions."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"streamer handler: {name}: expected an integer, got {raw!r}") from None


def _as_actions(value: Any, *, where: str) -> list[Action]:
    items = list(value) if not isinstance(value, Action) else [value]
    actions: list[Action] = []
    for item in items:
        if inspect.isclass(item) and issubclass(item, Action):
            item = item()
        if not isinstance(item, Action):
            raise HandlerLoadError(f"{where} returned {type(item).__name__}, not an Action")
        actions.append(item)
    if not actions:
        raise HandlerLoadError(f"{where} has no actions")
    return actions


def _call(factory: Callable[[], Any], *, where: str) -> list[Action]:
    return _as_actions(factory(), where=where)


def load_actions(target: str) -> tuple[str, list[Action]]:
    """(handler name, actions) for an entry point name, ``module:function`` or module path."""
    for ep in entry_points(group="streamer.handlers"):
        if ep.name == target:
            return ep.name, _call(ep.load(), where=f"entry point streamer.handlers:{ep.name}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            known = sorted(ep.name for ep in entry_points(group="streamer.handlers"))
            raise HandlerLoadError(
                f"{target!r} is neither a streamer.handlers entry point "
                f"({', '.join(known) or 'none installed'}) nor an importable module"
            ) from None
        raise
    default_name = getattr(module, "NAME", None) or re.sub(r"[^a-z0-9-]+", "-", module_name.lower()).strip(
        "-"
    )
    if attr:
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise HandlerLoadError(f"{module_name} has no callable {attr!r}")
        return default_name, _call(factory, where=target)
    factory = getattr(module, "handlers", None)
    if callable(factory):
        return default_name, _call(factory, where=f"{module_name}.handlers()")
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Action)
        and obj is not Action
        and obj.__module__ == module.__name__
        and obj.name
    ]
    return default_name, _as_actions(classes, where=module_name)


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
