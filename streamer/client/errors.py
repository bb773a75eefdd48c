"""Typed errors of the client SDK: one exception class per protocol error code.

Catch :class:`StreamerError` for everything, or a subclass for one code. The class
mirrors the server's ``error`` message: ``code``, ``message``, ``details``,
``retryable`` and the ``request_id`` it concerns. Two classes carry a trailing
meaning in their names to avoid shadowing Python built-ins: the ``TIMEOUT`` code is
:class:`RequestTimeoutError` (also raised when the client's own ``timeout`` runs out)
and ``CANCELLED`` is :class:`RequestCancelledError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamer import protocol

__all__ = [
    "ConnectionClosedError",
    "DuplicateRequestError",
    "ForbiddenError",
    "InternalError",
    "InvalidActionError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProcessingFailedError",
    "RateLimitedError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "StreamerError",
    "UnauthorizedError",
    "ValidationError",
    "error_class",
    "error_from_message",
]


class StreamerError(Exception):
    """An ``error`` answer from Streamer (or a client-side failure mapped to a code)."""

    code: str = protocol.INTERNAL_ERROR

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Any = None,
        retryable: bool | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details
        self.retryable = bool(retryable) if retryable is not None else self.code in protocol.RETRYABLE_CODES
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"request_id={self.request_id!r}, retryable={self.retryable!r})"
        )


class ValidationError(StreamerError):
    code = protocol.VALIDATION_ERROR


class InvalidActionError(StreamerError):
    code = protocol.INVALID_ACTION


class PayloadTooLargeError(StreamerError):
    code = protocol.PAYLOAD_TOO_LARGE


class UnauthorizedError(StreamerError):
    code = protocol.UNAUTHORIZED


class ForbiddenError(StreamerError):
    code = protocol.FORBIDDEN


class NotFoundError(StreamerError):
    code = protocol.NOT_FOUND


class DuplicateRequestError(StreamerError):
    code = protocol.DUPLICATE_REQUEST


class RateLimitedError(StreamerError):
    code = protocol.RATE_LIMITED


class RequestTimeoutError(StreamerError):
    code = protocol.TIMEOUT


class RequestCancelledError(StreamerError):
    code = protocol.CANCELLED


class ProcessingFailedError(StreamerError):
    code = protocol.PROCESSING_FAILED


class ResultTooLargeError(StreamerError):
    """The request's result is over the server's stored-result limit (a Streamer addition)."""

    code = protocol.RESULT_TOO_LARGE


class ServiceUnavailableError(StreamerError):
    code = protocol.SERVICE_UNAVAILABLE


class InternalError(StreamerError):
    code = protocol.INTERNAL_ERROR


class ConnectionClosedError(ServiceUnavailableError):
    """The connection is gone and the client will not (or can no longer) reconnect."""


_BY_CODE: dict[str, type[StreamerError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        InvalidActionError,
        PayloadTooLargeError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        DuplicateRequestError,
        RateLimitedError,
        RequestTimeoutError,
        RequestCancelledError,
        ProcessingFailedError,
        ResultTooLargeError,
        ServiceUnavailableError,
        InternalError,
    )
}


def error_class(code: str) -> type[StreamerError]:
    """The exception class of an error code (unknown codes map to :class:`StreamerError`)."""
    return _BY_CODE.get(code, StreamerError)


def error_from_message(message: Mapping[str, Any]) -> StreamerError:
    """The exception for a server ``error`` message (or a FAILED/CANCELLED ``status``)."""
    err = message.get("error")
    request_id = message.get("request_id")
    rid = request_id if isinstance(request_id, str) else None
    if not isinstance(err, Mapping):
        if message.get("type") == "status" and message.get("status") == "CANCELLED":
            return RequestCancelledError(str(message.get("message") or "Request cancelled"), request_id=rid)
        return InternalError(f"Malformed error message: {dict(message)!r}"[:500], request_id=rid)
    code = str(err.get("code") or protocol.INTERNAL_ERROR)
    cls = error_class(code)
    retryable = err.get("retryable")
    return cls(
        str(err.get("message") or code),
        code=code,
        details=err.get("details"),
        retryable=retryable if isinstance(retryable, bool) else None,
        request_id=rid,
    )
