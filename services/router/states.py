"""Frames that describe a stored request: its status, or its outcome when it is over.

``$status``, ``$cancel``, ``$subscribe``, ``$resume`` and an idempotent re-send all
answer from the same record, so they share these builders and a client sees one
shape whichever way it asked.
"""

from __future__ import annotations

from streamer import protocol
from streamer.protocol import (
    ERROR_CODES,
    PROCESSING_FAILED,
    CompleteMessage,
    ErrorMessage,
    StatusFields,
    StatusMessage,
    complete_message,
    error_message,
    status_message,
    timestamp,
)
from streamer.store import CANCELLED, COMPLETED, FAILED, PENDING, PROCESSING, RequestRecord

_DEFAULT_MESSAGES = {
    PENDING: "Queued",
    PROCESSING: "Processing",
    COMPLETED: "Completed",
    FAILED: "Failed",
    CANCELLED: "Cancelled",
}


def _progress(record: RequestRecord) -> tuple[float, str]:
    progress = record.progress if isinstance(record.progress, dict) else {}
    pct = progress.get("percentage")
    if record.status == COMPLETED:
        pct = 100  # done is 100 %, whatever the last progress report said (a bar must not stop at 66)
    elif not isinstance(pct, int | float) or isinstance(pct, bool):
        pct = 0
    message = progress.get("message")
    if record.status in (FAILED, CANCELLED) and isinstance(record.error, dict):
        message = record.error.get("message") or message
    if record.status == PROCESSING and record.cancel_requested:
        message = "Cancellation requested"
    if not isinstance(message, str) or not message:
        message = _DEFAULT_MESSAGES.get(record.status, record.status)
    return float(pct), message


def status_frame(
    record: RequestRecord, *, subscribed: bool | None = None, resumed: bool | None = None
) -> StatusMessage:
    """A ``status`` frame for ``record``; terminal ones carry ``result`` or ``error``."""
    pct, message = _progress(record)
    fields: StatusFields = {
        "action": record.action,
        "attempt": record.attempt,
        "created_at": timestamp(record.created_at),
        "updated_at": timestamp(record.updated_at),
    }
    if record.finished_at:
        fields["finished_at"] = timestamp(record.finished_at)
    if record.status == COMPLETED and record.result is not None:
        fields["result"] = record.result
    if record.status in (FAILED, CANCELLED) and record.error:
        fields["error"] = record.error
    if record.cancel_requested and record.status == PROCESSING:
        fields["cancel_requested"] = True
    if resumed is not None:
        fields["resumed"] = resumed
    if subscribed is not None:
        fields["subscribed"] = subscribed
    return status_message(
        record.client_request_id,
        status=record.status,
        percentage=int(pct) if pct == int(pct) else pct,
        message=message,
        **fields,
    )


def outcome_frame(record: RequestRecord) -> StatusMessage | CompleteMessage | ErrorMessage:
    """The frame a client gets when it re-sends the id of a request that is already over.

    ``complete`` with the result, or the ``error`` it ended with; a request still
    running answers its ``status`` instead.
    """
    if record.status == COMPLETED:
        return complete_message(
            record.client_request_id, record.result, at=record.finished_at or record.updated_at
        )
    if record.status in (FAILED, CANCELLED):
        error = record.error if isinstance(record.error, dict) else {}
        default = protocol.CANCELLED if record.status == CANCELLED else PROCESSING_FAILED
        code = error.get("code") if error.get("code") in ERROR_CODES else default
        return error_message(
            str(code),
            str(error.get("message") or _DEFAULT_MESSAGES[record.status]),
            request_id=record.client_request_id,
            details=error.get("details"),
            retryable=False,
        )
    return status_frame(record)
