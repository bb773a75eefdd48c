"""``streamer publish MESSAGE``: push one JSON object to a connection, a user or a tenant.

Through the router's ``Publish`` (``docs/backends.md``), with the backend SDK. The
target is ``--connection ID``, ``--user U --tenant T``, or ``--tenant T`` alone (every
connection of the tenant). ``--json`` prints the counts as one JSON object; otherwise
a sentence goes to stderr.

Exit status: those of ``streamer request`` (docs/client.md) — 0 when every matched
connection got the message (a user or tenant with no open connection is 0 as well),
2 for a usage error, 13/14 when the router refused the caller (``UNAUTHENTICATED`` /
``PERMISSION_DENIED``), 15 (``NOT_FOUND``) for a ``--connection`` that does not
exist, 21 (``SERVICE_UNAVAILABLE``) when the router cannot be reached or some matched
connections could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from streamer import protocol, rpc
from streamer.backend import Backend
from streamer.cli.request import EXIT_USAGE, exit_code, parse_object
from streamer.client.errors import StreamerError
from streamer.config import load_settings


def add_router_flags(p: argparse.ArgumentParser) -> None:
    """Flags every backend command shares."""
    p.add_argument(
        "--router",
        default=None,
        help="router's gRPC address (default: STREAMER_ROUTER_ADDRESS, 127.0.0.1:50052)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of the call in seconds (default 10)")
    p.add_argument("--json", action="store_true", help="print the answer as one JSON object on stdout")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "publish",
        help="push a JSON message to a connection, a user or a tenant",
        description="Push one JSON object to every connection of a user (--user and --tenant), of a "
        "tenant (--tenant alone), or to one connection (--connection), through the router's Publish. "
        "Exit status as for `streamer request` (see docs/backends.md).",
    )
    p.add_argument(
        "message", help='JSON object, e.g. \'{"type": "notice", "text": "hi"}\'; @FILE reads a file'
    )
    p.add_argument("--connection", help="one connection id")
    p.add_argument("--user", help="every connection of this user (needs --tenant)")
    p.add_argument("--tenant", help="the user's tenant; alone: every connection of this tenant")
    add_router_flags(p)


def call_router(args: argparse.Namespace, work: Callable[[Backend], tuple[dict[str, Any], int]]) -> int:
    """Run ``work`` with a backend client, print its answer (``--json``) and return its exit
    status; a typed error is printed as ``streamer request`` does, with its exit status."""
    settings = load_settings()
    rpc.configure_tls(settings)  # STREAMER_TLS_*: this command's certificate names the caller
    try:
        with Backend(args.router, settings=settings, timeout=args.timeout) as backend:
            out, status = work(backend)
    except StreamerError as exc:
        if args.json:
            error = protocol.error_message(
                exc.code, exc.message, request_id=exc.request_id, details=exc.details
            )
            print(json.dumps(error, ensure_ascii=False, separators=(",", ":")))
        hint = (
            " (is the router running? --router sets its address)" if exc.code == "SERVICE_UNAVAILABLE" else ""
        )
        print(f"{exc.code}: {exc.message}{hint}", file=sys.stderr)
        if exc.details is not None and not args.json:
            print(json.dumps(exc.details, indent=2, ensure_ascii=False), file=sys.stderr)
        return exit_code(exc.code)
    if args.json:
        print(json.dumps(out, ensure_ascii=False, separators=(",", ":")))
    return status


def run(args: argparse.Namespace) -> int:
    try:
        message = parse_object(args.message, what="message") or {}
    except (ValueError, OSError) as exc:
        print(f"streamer publish: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.connection and (args.user or args.tenant):
        print("streamer publish: --connection goes alone (no --user/--tenant)", file=sys.stderr)
        return EXIT_USAGE
    if args.user and not args.tenant:
        print(
            "streamer publish: --user needs --tenant (a user id is unique only within its tenant)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not (args.connection or args.user or args.tenant):
        print("streamer publish: give --connection, --user with --tenant, or --tenant", file=sys.stderr)
        return EXIT_USAGE
    if args.connection:
        target: dict[str, Any] = {"to_connection": args.connection}
        what = f"connection {args.connection}"
    elif args.user:
        target = {"to_user": args.user, "tenant": args.tenant}
        what = f"user {args.user} of tenant {args.tenant}"
    else:
        target = {"to_tenant": args.tenant}
        what = f"tenant {args.tenant}"

    def work(backend: Backend) -> tuple[dict[str, Any], int]:
        sent = backend.publish(message, **target)
        out = {"matched": sent.matched, "delivered": sent.delivered, "failed": sent.failed}
        if not args.json:
            print(f"delivered to {sent.delivered} of {sent.matched} connection(s) of {what}", file=sys.stderr)
        if args.connection and not sent.matched:
            print(f"{protocol.NOT_FOUND}: no connection {args.connection!r}", file=sys.stderr)
            return out, exit_code(protocol.NOT_FOUND)
        if sent.failed:
            return out, exit_code(protocol.SERVICE_UNAVAILABLE)
        return out, 0

    return call_router(args, work)
