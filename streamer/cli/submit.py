"""``streamer submit ACTION``: start an async request on behalf of a user.

Through the router's ``Submit`` (``docs/backends.md``), with the backend SDK: the user's
open connections get its acknowledgment, progress and result, and ``$resume`` finds it
later. Prints the request id on stdout (``--json``: the request id, status, attached
connections and the router's answer frame as one JSON object).

Exit status: those of ``streamer request`` (docs/client.md): 0 when the request is
queued (or, for a re-submitted id, is running or completed), 2 for a usage error, 10
``VALIDATION_ERROR``, 11 ``INVALID_ACTION`` (also a sync or system action), 14
``FORBIDDEN`` (the user lacks a permission, or the caller policy refused the call),
16 ``DUPLICATE_REQUEST``, 21 ``SERVICE_UNAVAILABLE``...
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streamer.backend import Backend
from streamer.cli.publish import add_router_flags, call_router
from streamer.cli.request import EXIT_USAGE, parse_object
from streamer.local.devauth import DEV_TENANT, DEV_USER


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="start an async request on behalf of a user",
        description="Start an async request for --user of --tenant through the router's Submit: the "
        "user's connections see its acknowledgment, progress and result. Prints the request id. "
        "Exit status as for `streamer request` (see docs/backends.md).",
    )
    p.add_argument("action", help="an async action, e.g. generate_report")
    p.add_argument(
        "--payload", "-p", default="{}", help="JSON object payload (default {}); @FILE reads a file"
    )
    p.add_argument("--metadata", help="JSON object metadata (e.g. '{\"priority\": 5}')")
    p.add_argument("--user", default=DEV_USER, help=f"the user it is for (default {DEV_USER})")
    p.add_argument("--tenant", default=DEV_TENANT, help=f"the user's tenant (default {DEV_TENANT})")
    p.add_argument("--permissions", default="", help="comma-separated permissions of the user")
    p.add_argument(
        "--id", dest="request_id", help="request id (default: generated); re-submitting is idempotent"
    )
    add_router_flags(p)


def run(args: argparse.Namespace) -> int:
    try:
        payload = parse_object(args.payload, what="payload") or {}
        metadata = parse_object(args.metadata, what="metadata")
    except (ValueError, OSError) as exc:
        print(f"streamer submit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    permissions = [p.strip() for p in str(args.permissions).split(",") if p.strip()]

    def work(backend: Backend) -> tuple[dict[str, Any], int]:
        job = backend.submit(
            args.action,
            payload,
            user=args.user,
            tenant=args.tenant,
            permissions=permissions,
            request_id=args.request_id,
            metadata=metadata,
        )
        if not args.json:
            print(job.request_id)
            print(
                f"{job.status}: {args.action} for {args.user} of {args.tenant}, "
                f"sent to {job.connections} open connection(s)",
                file=sys.stderr,
            )
        out = {
            "request_id": job.request_id,
            "status": job.status,
            "connections": job.connections,
            "frame": job.frame,
        }
        return out, 0

    return call_router(args, work)
