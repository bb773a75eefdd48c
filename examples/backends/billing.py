"""A month-end billing job, as a backend: ``python -m examples.backends.billing --user alice --tenant acme``.

For each user it tells every open socket that the invoice is ready (``publish``), then
starts the user's sales report on their behalf (``submit``): their sockets see its
acknowledgment, progress and result as if they had asked, and a socket opened later
finds it with ``$resume``. Run it next to ``streamer dev`` (which prints the router's
address for ``--router``) with ``streamer request`` or the demo page open as the same
user. With a caller policy it needs ``Publish`` and ``Submit`` for the tenant: set
``STREAMER_SERVICE_TOKEN_SECRET`` and ``STREAMER_SERVICE_NAME=billing`` (or give it its
own mTLS certificate).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys

from streamer import rpc
from streamer.backend import AsyncBackend
from streamer.client import StreamerError
from streamer.config import load_settings


def month_before(today: datetime.date) -> tuple[str, str]:
    """The first and last day of the month before ``today``, as ISO dates."""
    last = today.replace(day=1) - datetime.timedelta(days=1)
    return last.replace(day=1).isoformat(), last.isoformat()


async def bill(backend: AsyncBackend, *, user: str, tenant: str, today: datetime.date) -> dict[str, object]:
    """Notify one user and start their report; what happened, as one JSON-able dict."""
    start, end = month_before(today)
    sent = await backend.publish(
        {"type": "invoice_ready", "period": {"start": start, "end": end}}, to_user=user, tenant=tenant
    )
    job = await backend.submit(
        "generate_report",
        {"start_date": start, "end_date": end, "format": "pdf", "report_type": "sales"},
        user=user,
        tenant=tenant,
        metadata={"priority": 3},
    )
    return {
        "user": user,
        "tenant": tenant,
        "notified": sent.delivered,
        "request_id": job.request_id,
        "status": job.status,
        "watching": job.connections,
    }


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.backends.billing", description=__doc__)
    p.add_argument("--user", action="append", required=True, help="a user to bill (repeatable)")
    p.add_argument("--tenant", required=True, help="the users' tenant")
    p.add_argument("--router", help="router's gRPC address (default STREAMER_ROUTER_ADDRESS)")
    args = p.parse_args(argv)
    settings = load_settings()
    rpc.configure_tls(settings)
    async with AsyncBackend(args.router, settings=settings) as backend:
        try:
            for user in args.user:
                out = await bill(backend, user=user, tenant=args.tenant, today=datetime.date.today())
                print(json.dumps(out), flush=True)
        except StreamerError as exc:
            print(f"billing: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
