"""Streamer's backend SDK: push to users' sockets, and start requests on their behalf.

::

    from streamer.backend import Backend

    with Backend("router:50052") as backend:
        backend.publish({"type": "invoice_paid", "invoice": "F-1"}, to_user="alice", tenant="acme")
        job = backend.submit("generate_report", {...}, user="alice", tenant="acme")

:class:`AsyncBackend` is the same for asyncio code. See docs/backends.md.
"""

from __future__ import annotations

from streamer.backend.client import AsyncBackend, Backend, Delivered, Submitted, grpc_error

__all__ = ["AsyncBackend", "Backend", "Delivered", "Submitted", "grpc_error"]
