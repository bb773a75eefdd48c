"""JSON logs that carry the request and connection ids of the work at hand.

With tracing on (:mod:`streamer.tracing`) a line written inside a span also carries its
``trace_id``. Ids live in context variables, so every log line written while a request is being
handled carries them without threading them through every call::

    with log_context(request_id=rid, connection_id=cid):
        logger.info("routed", extra={"action": action})

Secrets never reach a log line: tokens and payloads are not passed to the logger by
our code, and :func:`redact` scrubs anything that looks like a JWT from messages.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

try:
    from streamer.tracing import current_trace_id
except ImportError:  # the light (client-only) install has no OpenTelemetry: no trace ids

    def current_trace_id() -> str | None:
        return None


request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
connection_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("connection_id", default=None)

_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def redact(text: str) -> str:
    """Replace anything shaped like a JWT with ``[redacted-token]``."""
    return _JWT_RE.sub("[redacted-token]", text)


@contextlib.contextmanager
def log_context(*, request_id: str | None = None, connection_id: str | None = None) -> Iterator[None]:
    """Attach ids to every log line written inside the block (and tasks started in it)."""
    tokens = []
    if request_id is not None:
        tokens.append((request_id_var, request_id_var.set(request_id)))
    if connection_id is not None:
        tokens.append((connection_id_var, connection_id_var.set(connection_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, ids, extra fields."""

    def __init__(self, *, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        cid = getattr(record, "connection_id", None) or connection_id_var.get()
        if rid:
            entry["request_id"] = rid
        if cid:
            entry["connection_id"] = cid
        tid = current_trace_id()
        if tid:
            entry["trace_id"] = tid
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key in entry or key.startswith("_"):
                continue
            entry[key] = value if isinstance(value, int | float | bool | type(None)) else redact(str(value))
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal, still with ids."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or request_id_var.get()
        cid = getattr(record, "connection_id", None) or connection_id_var.get()
        ids = " ".join(
            f"{k}={v}" for k, v in (("req", rid), ("conn", cid), ("trace", current_trace_id())) if v
        )
        base = f"{record.levelname[0]} {record.name}: {redact(record.getMessage())}"
        text = f"{base} [{ids}]" if ids else base
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


def setup_logging(*, service: str, level: str = "INFO", json_format: bool = True) -> None:
    """Send every log line to stderr in the chosen format; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service=service) if json_format else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiobotocore", "botocore", "urllib3", "aiohttp.access", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
