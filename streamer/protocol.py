"""The WebSocket wire protocol (DESIGN §2): client frames in, server messages out.

:func:`parse_client_frame` turns any text or bytes into a :class:`ClientMessage` or
raises :class:`ProtocolError` carrying a documented error code — never anything
else (a property-based test holds it to that). The ``*_message`` builders produce
every server message with the field names the original Streamer emitted, so its
clients keep working.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal, NotRequired, TypedDict, Unpack, cast

# --- error codes -------------------------------------------------------------------
VALIDATION_ERROR: Final = "VALIDATION_ERROR"
INVALID_ACTION: Final = "INVALID_ACTION"
PAYLOAD_TOO_LARGE: Final = "PAYLOAD_TOO_LARGE"
UNAUTHORIZED: Final = "UNAUTHORIZED"
FORBIDDEN: Final = "FORBIDDEN"
NOT_FOUND: Final = "NOT_FOUND"
DUPLICATE_REQUEST: Final = "DUPLICATE_REQUEST"
RATE_LIMITED: Final = "RATE_LIMITED"
TIMEOUT: Final = "TIMEOUT"
#: Also the word for a request's final status (``streamer.store.CANCELLED``): where both
#: are in scope, name the error code ``protocol.CANCELLED``.
CANCELLED: Final = "CANCELLED"
PROCESSING_FAILED: Final = "PROCESSING_FAILED"
#: Not in the original Streamer's codes: an async result over the stored-result limit
#: (``STREAMER_MAX_RESULT_BYTES``, or DynamoDB's 400 KB item limit). Never retryable.
RESULT_TOO_LARGE: Final = "RESULT_TOO_LARGE"
SERVICE_UNAVAILABLE: Final = "SERVICE_UNAVAILABLE"
INTERNAL_ERROR: Final = "INTERNAL_ERROR"
ERROR_CODES: Final = frozenset(
    {
        VALIDATION_ERROR,
        INVALID_ACTION,
        PAYLOAD_TOO_LARGE,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        DUPLICATE_REQUEST,
        RATE_LIMITED,
        TIMEOUT,
        CANCELLED,
        PROCESSING_FAILED,
        RESULT_TOO_LARGE,
        SERVICE_UNAVAILABLE,
        INTERNAL_ERROR,
    }
)
RETRYABLE_CODES: Final = frozenset({RATE_LIMITED, SERVICE_UNAVAILABLE, TIMEOUT, INTERNAL_ERROR})

# --- system actions ----------------------------------------------------------------
PING: Final = "$ping"
CANCEL: Final = "$cancel"
STATUS: Final = "$status"
SUBSCRIBE: Final = "$subscribe"
UNSUBSCRIBE: Final = "$unsubscribe"
RESUME: Final = "$resume"
SYSTEM_ACTIONS: Final = frozenset({PING, CANCEL, STATUS, SUBSCRIBE, UNSUBSCRIBE, RESUME})
#: System actions whose payload must name a request.
NEEDS_REQUEST_ID: Final = frozenset({CANCEL, STATUS, SUBSCRIBE, UNSUBSCRIBE})

# --- WebSocket close codes ---------------------------------------------------------
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001  # server shutting down (SIGTERM drain)
#: In a 1001's close reason: how long this client should wait before reconnecting, so the
#: sockets of a draining pod come back spread over time, not all at once.
RECONNECT_HINT: Final = "reconnect_after_ms="
CLOSE_POLICY: Final = 1008  # sustained rate-limit abuse
CLOSE_TOO_BIG: Final = 1009  # a frame far over the size limit
CLOSE_INTERNAL: Final = 1011
CLOSE_TRY_AGAIN: Final = 1013  # client too slow to read: its send queue overflowed
CLOSE_HEARTBEAT: Final = 4000  # missed pongs
CLOSE_DISCONNECTED: Final = 4001  # closed through Connections.Disconnect
CLOSE_TOKEN_EXPIRED: Final = 4002  # the connection's JWT expired: reconnect with a fresh one

#: Matched with ``fullmatch``: ``$`` alone would let a trailing newline through.
ACTION_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAX_ID_LENGTH: Final = 128
_ID_RE: Final = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
MAX_DEPTH: Final = 32


class ProtocolError(Exception):
    """A client frame or request is invalid; becomes an ``error`` message."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        request_id: str | None = None,
        details: Any = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        assert code in ERROR_CODES, code
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details
        self.retryable = retryable

    def to_message(self) -> ErrorMessage:
        return error_message(
            self.code,
            self.message,
            request_id=self.request_id,
            details=self.details,
            retryable=self.retryable,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientMessage:
    """One valid client frame. ``request_id`` is None when the client sent none."""

    action: str
    request_id: str | None
    payload: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def is_system(self) -> bool:
        return self.action.startswith("$")

    @property
    def target_request_id(self) -> str | None:
        """For system actions: the request named in the payload (``request_id`` or ``id``)."""
        value = self.payload.get("request_id", self.payload.get("id"))
        return value if isinstance(value, str) else None


def drain_close_reason(reason: str, *, reconnect_after: float) -> str:
    """A 1001 close reason that asks the client to wait ``reconnect_after`` seconds first."""
    if reconnect_after <= 0:
        return reason
    return f"{reason}; {RECONNECT_HINT}{int(reconnect_after * 1000)}"


_HINT = re.compile(re.escape(RECONNECT_HINT) + r"(\d{1,9})")


def reconnect_hint(reason: str | None) -> float | None:
    """Seconds a close reason asks the client to wait before reconnecting, if it says."""
    match = _HINT.search(reason or "")
    return int(match.group(1)) / 1000 if match else None


def new_request_id() -> str:
    """A server-made request id for a frame that carried none."""
    return f"req-{uuid.uuid4().hex}"


def json_depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (counting stops past ``limit``); iterative, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError, ValueError):
        return False
    return True


def _valid_id(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ProtocolError(VALIDATION_ERROR, f"'{field}' must be a string")
    if not _ID_RE.fullmatch(value):
        raise ProtocolError(
            VALIDATION_ERROR,
            f"'{field}' must be 1-{MAX_ID_LENGTH} printable ASCII characters without spaces",
        )
    return value


def parse_client_frame(data: str | bytes, *, max_bytes: int | None = None) -> ClientMessage:
    """Parse one client frame; raise :class:`ProtocolError` for anything invalid."""
    if isinstance(data, bytes | bytearray):
        size = len(data)
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(VALIDATION_ERROR, "Frame is not valid UTF-8") from None
    elif isinstance(data, str):
        text = data
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise ProtocolError(VALIDATION_ERROR, "Frame is not valid UTF-8") from None
    else:
        raise ProtocolError(VALIDATION_ERROR, "Frame must be text")
    if max_bytes is not None and size > max_bytes:
        raise ProtocolError(
            PAYLOAD_TOO_LARGE,
            f"Frame is {size} bytes; the limit is {max_bytes}",
            details={"size": size, "limit": max_bytes},
        )
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(VALIDATION_ERROR, "Frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(VALIDATION_ERROR, "Frame must be a JSON object")
    if _SURROGATE_ESCAPE.search(text) and not _encodable(obj):
        # "\ud800" alone is valid JSON but no UTF-8: it could be neither stored nor forwarded.
        raise ProtocolError(VALIDATION_ERROR, "Frame contains an unpaired UTF-16 surrogate")
    if json_depth(obj, MAX_DEPTH) > MAX_DEPTH:
        raise ProtocolError(VALIDATION_ERROR, f"Frame is nested deeper than {MAX_DEPTH} levels")

    request_id: str | None = None
    if obj.get("id") is not None:
        request_id = _valid_id(obj["id"], "id")
    if obj.get("request_id") is not None:
        alias = _valid_id(obj["request_id"], "request_id")
        if request_id is not None and alias != request_id:
            raise ProtocolError(VALIDATION_ERROR, "'id' and 'request_id' differ", request_id=request_id)
        request_id = alias

    action = obj.get("action")
    if action is None:
        raise ProtocolError(VALIDATION_ERROR, "'action' is required", request_id=request_id)
    if not isinstance(action, str):
        raise ProtocolError(VALIDATION_ERROR, "'action' must be a string", request_id=request_id)
    if action.startswith("$"):
        if action not in SYSTEM_ACTIONS:
            raise ProtocolError(
                INVALID_ACTION,
                f"Unknown system action {action[:64]!r}",
                request_id=request_id,
                details={"system_actions": sorted(SYSTEM_ACTIONS)},
            )
    elif not ACTION_RE.fullmatch(action):
        raise ProtocolError(
            VALIDATION_ERROR, "'action' must match [A-Za-z0-9._-]{1,128}", request_id=request_id
        )

    payload = obj.get("payload")
    if payload is None:
        payload = {}
    elif not isinstance(payload, dict):
        raise ProtocolError(VALIDATION_ERROR, "'payload' must be a JSON object", request_id=request_id)
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise ProtocolError(VALIDATION_ERROR, "'metadata' must be a JSON object", request_id=request_id)

    msg = ClientMessage(action=action, request_id=request_id, payload=payload, metadata=metadata)
    if action in NEEDS_REQUEST_ID:
        target = payload.get("request_id", payload.get("id"))
        if target is None:
            raise ProtocolError(VALIDATION_ERROR, f"{action} needs payload.request_id", request_id=request_id)
        _valid_id(target, "payload.request_id")
    return msg


def peek_request_id(data: str | bytes, *, max_bytes: int) -> str | None:
    """The frame's id if it has a valid one, else None; never raises.

    For answers that refuse a frame before parsing it (``RATE_LIMITED``): the client can
    still tell which request was refused. Frames over ``max_bytes`` are not looked at.
    """
    if len(data) > max_bytes:
        return None
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError, TypeError):
        return None
    if not isinstance(obj, dict):
        return None
    for key in ("id", "request_id"):
        value = obj.get(key)
        if isinstance(value, str) and _ID_RE.fullmatch(value):
            return value
    return None


# --- server messages ---------------------------------------------------------------


def timestamp(at: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2026-11-22T01:02:03.456Z``."""
    moment = (
        datetime.datetime.now(tz=datetime.UTC)
        if at is None
        else datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    )
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# One TypedDict per server message kind, named as in protocol/streamer.schema.json (and the
# generated TypeScript types), so mypy catches a missing or misspelt field wherever a frame
# is built or passed on. A message a backend publishes (PublishedMessage) is any JSON object
# with a ``type`` of its own: the paths that carry those take ``Mapping[str, Any]``.


class ResponseMessage(TypedDict):
    """A sync request's answer."""

    type: Literal["response"]
    request_id: str
    success: Literal[True]
    data: Any


class AcknowledgmentMessage(TypedDict):
    """An async request was stored and queued."""

    type: Literal["acknowledgment"]
    request_id: str
    status: Literal["queued"]
    message: str


class ProgressMessage(TypedDict):
    """A progress report of an async request; ``seq`` only increases."""

    type: Literal["progress"]
    request_id: str
    percentage: float
    message: str
    timestamp: str
    seq: int
    metadata: NotRequired[dict[str, Any]]


class CompleteMessage(TypedDict):
    """An async request finished with a result."""

    type: Literal["complete"]
    request_id: str
    success: Literal[True]
    result: Any
    timestamp: str


class StatusFields(TypedDict, total=False):
    """The optional fields of a ``status`` message (a terminal one carries result or error)."""

    action: str
    attempt: int
    created_at: str
    updated_at: str
    finished_at: str
    result: Any
    error: dict[str, Any]
    cancel_requested: bool
    subscribed: bool
    resumed: bool
    resume_cursor: str


class StatusMessage(StatusFields):
    """A request's stored state."""

    type: Literal["status"]
    request_id: str
    status: str
    percentage: float
    message: str


class ErrorDetail(TypedDict):
    code: str
    message: str
    details: NotRequired[Any]
    retryable: NotRequired[bool]


class ErrorMessage(TypedDict):
    """A request (or a frame) failed; without ``request_id`` it is about an unparsable frame."""

    type: Literal["error"]
    request_id: NotRequired[str]
    error: ErrorDetail


class PingMessage(TypedDict):
    type: Literal["ping"]


class PongMessage(TypedDict):
    type: Literal["pong"]
    timestamp: str


#: A server message of a type the protocol defines (the schema's ServerMessage without
#: PublishedMessage). Narrow it on ``message["type"]``.
KnownServerMessage = (
    ResponseMessage
    | AcknowledgmentMessage
    | ProgressMessage
    | CompleteMessage
    | StatusMessage
    | ErrorMessage
    | PingMessage
    | PongMessage
)


def response_message(request_id: str, data: Any) -> ResponseMessage:
    return {"type": "response", "request_id": request_id, "success": True, "data": data}


def acknowledgment_message(
    request_id: str, message: str = "Request queued for processing"
) -> AcknowledgmentMessage:
    return {"type": "acknowledgment", "request_id": request_id, "status": "queued", "message": message}


def progress_message(
    request_id: str,
    *,
    percentage: float,
    message: str,
    seq: int,
    metadata: Mapping[str, Any] | None = None,
    at: float | None = None,
) -> ProgressMessage:
    pct: float = max(0.0, min(100.0, float(percentage)))
    out: ProgressMessage = {
        "type": "progress",
        "request_id": request_id,
        "percentage": int(pct) if pct == int(pct) else pct,
        "message": message,
        "timestamp": timestamp(at),
        "seq": seq,
    }
    if metadata:
        out["metadata"] = dict(metadata)
    return out


def complete_message(request_id: str, result: Any, *, at: float | None = None) -> CompleteMessage:
    # "success" is not in DESIGN §2's shape but the original Streamer sent it; clients
    # written against the original read it, and others ignore it.
    return {
        "type": "complete",
        "request_id": request_id,
        "success": True,
        "result": result,
        "timestamp": timestamp(at),
    }


def status_message(
    request_id: str,
    *,
    status: str,
    percentage: float = 0,
    message: str = "",
    **fields: Unpack[StatusFields],
) -> StatusMessage:
    present = cast(StatusFields, {k: v for k, v in fields.items() if v is not None})  # None: left out
    return {
        "type": "status",
        "request_id": request_id,
        "status": status,
        "percentage": percentage,
        "message": message,
        **present,
    }


def error_message(
    code: str,
    message: str,
    *,
    request_id: str | None = None,
    details: Any = None,
    retryable: bool | None = None,
) -> ErrorMessage:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    err: ErrorDetail = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    if retryable is None and code in RETRYABLE_CODES:
        retryable = True
    if retryable is not None:
        err["retryable"] = retryable
    if request_id is None:
        return {"type": "error", "error": err}
    return {"type": "error", "request_id": request_id, "error": err}


def ping_message() -> PingMessage:
    return {"type": "ping"}


def pong_message() -> PongMessage:
    return {"type": "pong", "timestamp": timestamp()}


def encode(message: Mapping[str, Any]) -> str:
    """A server message as frame text (compact JSON, UTF-8 kept)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, default=str)


def encode_bytes(message: Mapping[str, Any]) -> bytes:
    return encode(message).encode("utf-8")
