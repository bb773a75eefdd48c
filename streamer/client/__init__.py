"""The async Python client SDK of Streamer (see docs/client.md)::

from streamer.client import StreamerClient

async with StreamerClient("ws://127.0.0.1:8080/ws", token=token) as client:
    echo = await client.request("echo", {"message": "hi"})
    report = await client.request(
        "generate_report",
        {"start_date": "2026-01-01", "end_date": "2026-01-31", "format": "pdf", "report_type": "sales"},
        on_progress=lambda p: print(p.percentage, p.message),
    )
"""

from __future__ import annotations

from streamer.client.client import Progress, RequestHandle, StreamerClient, is_terminal
from streamer.client.errors import (
    ConnectionClosedError,
    DuplicateRequestError,
    ForbiddenError,
    InternalError,
    InvalidActionError,
    NotFoundError,
    PayloadTooLargeError,
    ProcessingFailedError,
    RateLimitedError,
    RequestCancelledError,
    RequestTimeoutError,
    ResultTooLargeError,
    ServiceUnavailableError,
    StreamerError,
    UnauthorizedError,
    ValidationError,
    error_class,
    error_from_message,
)

__all__ = [
    "ConnectionClosedError",
    "DuplicateRequestError",
    "ForbiddenError",
    "InternalError",
    "InvalidActionError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProcessingFailedError",
    "Progress",
    "RateLimitedError",
    "RequestCancelledError",
    "RequestHandle",
    "RequestTimeoutError",
    "ResultTooLargeError",
    "ServiceUnavailableError",
    "StreamerClient",
    "StreamerError",
    "UnauthorizedError",
    "ValidationError",
    "error_class",
    "error_from_message",
    "is_terminal",
]
