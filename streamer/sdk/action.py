"""What a handler author writes: one :class:`Action` subclass per action.

An action declares how it is called (mode, schema, timeout, ...) as class
attributes, and implements :meth:`Action.process`. Those same attributes feed the
handler's ``Describe`` answer and its StreamerHandler document, so the schema the
router enforces and the one the handler enforces can never drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from streamer.registry.model import ACTION_RE, MODES
from streamer.schema import SchemaError, check_schema

__all__ = ["Action", "PermanentError", "ProgressFn", "Request", "RetryableError", "ValidationError"]


class ValidationError(Exception):
    """The payload is not acceptable: answered as ``VALIDATION_ERROR``, never retried.

    ``details`` should be a list of ``{"path": "a.b[0]", "message": ...}`` like the
    schema check produces, so clients handle both the same way.
    """

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class RetryableError(Exception):
    """A transient failure (a dependency is down): ``PROCESSING_FAILED`` with ``retryable``.

    The processor tries the request again, with backoff, up to ``max_attempts``.
    """


class PermanentError(Exception):
    """A failure that another attempt would not fix: ``PROCESSING_FAILED``, not retried.

    Its message reaches the client, so it must not contain secrets.
    """


class ProgressFn(Protocol):
    """``await progress(40, "Rendering", {"page": 3})`` reports progress to the client."""

    async def __call__(
        self, percentage: float, message: str = "", details: Mapping[str, Any] | None = None
    ) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Request:
    """One request as the handler sees it; ``attempt`` is 1 for the first try."""

    request_id: str
    action: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    user_id: str
    tenant_id: str
    permissions: tuple[str, ...]
    attempt: int
    connection_id: str


class Action:
    """Base class of one action. Subclass it and set at least ``name``.

    ``mode`` is ``sync`` (answered at once), ``async`` (queued, progress, complete)
    or ``auto`` (async when ``estimated_duration`` is over the router's threshold,
    5 s by default). ``timeout`` bounds one attempt; ``schema`` is a JSON Schema
    (Draft 2020-12) for the payload, checked by both the router and the handler.
    """

    name: str = ""
    mode: str = "sync"
    schema: Mapping[str, Any] | None = None
    estimated_duration: float = 0.0
    timeout: float = 30.0
    max_attempts: int = 3
    required_permissions: Sequence[str] = ()
    description: str = ""
    #: Default queue priority of async requests (higher runs first); a client may
    #: override it per request with ``metadata.priority``.
    priority: int = 0

    async def validate(self, request: Request) -> None:
        """Rules beyond the JSON Schema (e.g. one field relative to another).

        Runs after the schema passed; raise :class:`ValidationError` to refuse.
        """
        return None

    async def process(self, request: Request, progress: ProgressFn) -> Any:
        """Do the work and return the result (any JSON value)."""
        raise NotImplementedError(f"{type(self).__name__}.process")

    def check(self) -> None:
        """Raise ``ValueError`` when the declaration is unusable (at server start, not per call)."""
        where = f"action {type(self).__name__}"
        if not isinstance(self.name, str) or not ACTION_RE.match(self.name):
            raise ValueError(f"{where}: name must match {ACTION_RE.pattern}, got {self.name!r}")
        if self.mode not in MODES:
            raise ValueError(f"{where}: mode must be one of {MODES}, got {self.mode!r}")
        if not (isinstance(self.timeout, int | float) and math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"{where}: timeout must be a positive number of seconds")
        if not (isinstance(self.estimated_duration, int | float) and self.estimated_duration >= 0):
            raise ValueError(f"{where}: estimated_duration must be a non-negative number of seconds")
        if not (isinstance(self.max_attempts, int) and 1 <= self.max_attempts <= 100):
            raise ValueError(f"{where}: max_attempts must be an integer 1-100")
        if isinstance(self.required_permissions, str):
            raise ValueError(f"{where}: required_permissions must be a sequence of strings, not a string")
        if self.schema is not None:
            try:
                check_schema(self.schema)
            except SchemaError as exc:
                raise ValueError(f"{where}: invalid JSON Schema: {exc.message}") from None
