"""``streamer token``: print an HS256 token for the local stack.

Signed with ``--secret``, else ``STREAMER_JWT_SECRET``, else the fixed development
secret that ``streamer dev`` also uses (see :mod:`streamer.local.devauth`). That
secret is public, so such tokens are for development only.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from streamer.local.devauth import DEV_TENANT, DEV_USER, dev_token


def _positive(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "token",
        help="print a development token (HS256)",
        description="Print an HS256 JWT for the local stack. The default secret is public: development only.",
    )
    p.add_argument("--user", default=DEV_USER, help=f"the `sub` claim (default {DEV_USER})")
    p.add_argument("--tenant", default=DEV_TENANT, help=f"the `tenant_id` claim (default {DEV_TENANT})")
    p.add_argument(
        "--permissions", default="", help="comma-separated `permissions` claim, e.g. reports:read,admin"
    )
    p.add_argument("--ttl", type=_positive, default=3600.0, help="lifetime in seconds (default 3600)")
    p.add_argument(
        "--secret",
        help="HS256 secret (default: STREAMER_JWT_SECRET, else the development secret `streamer dev` uses)",
    )


def run(args: argparse.Namespace) -> int:
    permissions = [p.strip() for p in str(args.permissions).split(",") if p.strip()]
    try:
        token = dev_token(
            user=args.user, tenant=args.tenant, permissions=permissions, ttl=args.ttl, secret=args.secret
        )
    except ValueError as exc:
        print(f"streamer token: {exc}", file=sys.stderr)
        return 2
    if not (args.secret or os.environ.get("STREAMER_JWT_SECRET")) and sys.stderr.isatty():
        print("(signed with the public development secret: for the local stack only)", file=sys.stderr)
    print(token)
    return 0
