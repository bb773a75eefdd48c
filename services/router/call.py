"""One routed client message, decoded once from the gRPC ``RouteRequest``."""

from __future__ import annotations

import dataclasses
from typing import Any

from streamer import resolver, rpc
from streamer.api.v1 import router_pb2
from streamer.protocol import (
    MAX_DEPTH,
    UNAUTHORIZED,
    VALIDATION_ERROR,
    KnownServerMessage,
    ProtocolError,
    new_request_id,
)
from streamer.registry import ActionSpec
from streamer.store import RequestRecord

#: The frames answering one routed message, in order.
Frames = list[KnownServerMessage]
#: Longest connect endpoint kept as a delivery hint.
MAX_ENDPOINT_CHARS = 256


def _endpoint_hint(text: str) -> str:
    """connect's own address, kept only when it is a plain ``host:port`` (it is only a hint:
    without it the processor reads the connection record, as it always could)."""
    if not text or len(text) > MAX_ENDPOINT_CHARS:
        return ""
    try:
        address = resolver.parse(text)
    except ValueError:
        return ""
    return text if address.dns_server is None else ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Call:
    """Who sent what on which connection; ``deadline`` is the caller's time left (s)."""

    connection_id: str
    user_id: str
    tenant_id: str
    permissions: tuple[str, ...]
    action: str
    request_id: str
    payload: dict[str, Any]
    metadata: dict[str, Any]
    deadline: float | None = None
    #: The connect pod holding ``connection_id`` as it said (a hint; "" when unknown).
    connection_endpoint: str = ""

    @property
    def is_system(self) -> bool:
        return self.action.startswith("$")

    @classmethod
    def from_pb(
        cls, msg: router_pb2.RouteRequest | router_pb2.SubmitRequest, *, deadline: float | None = None
    ) -> Call:
        """Decode a RouteRequest (or a SubmitRequest: no connection); :class:`ProtocolError` when unusable."""
        request_id = msg.request_id or new_request_id()
        if not msg.principal.user_id or not msg.principal.tenant_id:
            raise ProtocolError(UNAUTHORIZED, "The caller has no user or tenant", request_id=request_id)
        try:
            payload = rpc.loads(msg.payload, default={}, max_depth=MAX_DEPTH)
            metadata = rpc.loads(msg.metadata, default={}, max_depth=MAX_DEPTH)
        except ValueError:
            raise ProtocolError(
                VALIDATION_ERROR, "Payload or metadata is not valid JSON", request_id=request_id
            ) from None
        if not isinstance(payload, dict):
            raise ProtocolError(VALIDATION_ERROR, "'payload' must be a JSON object", request_id=request_id)
        if not isinstance(metadata, dict):
            raise ProtocolError(VALIDATION_ERROR, "'metadata' must be a JSON object", request_id=request_id)
        return cls(
            connection_id=msg.connection_id if isinstance(msg, router_pb2.RouteRequest) else "",
            connection_endpoint=(
                _endpoint_hint(msg.connection_endpoint) if isinstance(msg, router_pb2.RouteRequest) else ""
            ),
            user_id=msg.principal.user_id,
            tenant_id=msg.principal.tenant_id,
            permissions=tuple(msg.principal.permissions),
            action=msg.action,
            request_id=request_id,
            payload=payload,
            metadata=metadata,
            deadline=deadline,
        )


@dataclasses.dataclass(kw_only=True)
class RouteContext:
    """What the middleware chain learns about a call on its way through."""

    call: Call
    spec: ActionSpec | None = None
    #: ``sync``, ``async``, ``system`` or ``unknown`` (a metric label).
    mode: str = "unknown"
    #: A backend's ``Submit`` (no connection; async actions only), not a client's ``Route``.
    submitted: bool = False
    #: The request this call stored, when it stored a new one.
    record: RequestRecord | None = None
    #: The answer (set by :meth:`Router.submit`).
    frames: Frames = dataclasses.field(default_factory=list)
