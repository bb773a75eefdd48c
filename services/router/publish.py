"""``Publish``: internal backends push a message to a connection, a user or a tenant.

This is the API Gateway Management API's job in the original design. The router
only checks the request and hands it to :class:`streamer.delivery.Delivery`, which
finds the connect pod of every target connection and cleans up stale records.
Unlike ``Route``, bad input here is the caller's bug, so it is a gRPC
``INVALID_ARGUMENT``, not an ``error`` frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import grpc
from grpc import aio

from streamer import protocol, rpc
from streamer.api.v1 import router_pb2
from streamer.callers import CallerPolicy
from streamer.delivery import PublishResult
from streamer.metrics import counter
from streamer.store import Store, StoreError

log = logging.getLogger(__name__)

PUBLISHED = counter(
    "streamer_router_publish_total",
    "Publish calls by target kind (connection, user, tenant) and outcome (delivered, undelivered, no_match).",
    ["target", "outcome"],
)


class DeliveryLike(Protocol):
    """The part of :class:`streamer.delivery.Delivery` Publish uses."""

    async def send(self, connection_id: str, message: Any) -> bool: ...

    async def to_user(self, *, tenant_id: str, user_id: str, message: Any) -> PublishResult: ...

    async def to_tenant(self, tenant_id: str, message: Any) -> PublishResult: ...


class InvalidPublish(ValueError):
    """The PublishRequest cannot be served (gRPC INVALID_ARGUMENT)."""


class TenantNotAllowed(Exception):
    """The caller may not publish to this tenant (gRPC PERMISSION_DENIED)."""

    def __init__(self, tenant_id: str) -> None:
        super().__init__(tenant_id)
        self.tenant_id = tenant_id


def parse_message(raw: bytes) -> dict[str, Any]:
    """The message to publish: a JSON object; ``"type": "message"`` is added when missing."""
    try:
        message = rpc.loads(raw) if raw else None
    except ValueError:
        raise InvalidPublish("message must be JSON") from None
    if not isinstance(message, dict):
        raise InvalidPublish("message must be a JSON object")
    if not isinstance(message.get("type"), str) or not message["type"]:
        message = {"type": "message", **{k: v for k, v in message.items() if k != "type"}}
    try:
        protocol.encode_bytes(message)  # what every pod will be sent; refused here, not there
    except UnicodeEncodeError:
        raise InvalidPublish("message must be UTF-8 text (it holds a lone surrogate escape)") from None
    return message


class Publisher:
    def __init__(self, *, delivery: DeliveryLike, store: Store) -> None:
        self.delivery = delivery
        self.store = store

    async def publish(
        self, request: router_pb2.PublishRequest, *, may_reach: Callable[[str], bool] | None = None
    ) -> PublishResult:
        """Deliver; :class:`InvalidPublish` when the request is malformed,
        :class:`TenantNotAllowed` when ``may_reach`` refuses the tenant of a target connection."""
        message = parse_message(request.message)
        kind = request.target.WhichOneof("target")
        if kind == "connection_id":
            cid = request.target.connection_id
            if not cid:
                raise InvalidPublish("target.connection_id is empty")
            record = await self.store.connections.get(cid)
            if record is not None and may_reach is not None and not may_reach(record.tenant_id):
                raise TenantNotAllowed(record.tenant_id)
            if record is None:
                result = PublishResult(matched=0, delivered=0, failed=0)
            else:
                ok = await self.delivery.send(cid, message)
                result = PublishResult(matched=1, delivered=int(ok), failed=int(not ok))
        elif kind == "user_id":
            if not request.target.user_id:
                raise InvalidPublish("target.user_id is empty")
            if not request.tenant_id:
                raise InvalidPublish("tenant_id is required with a user_id target")
            result = await self.delivery.to_user(
                tenant_id=request.tenant_id, user_id=request.target.user_id, message=message
            )
        elif kind == "tenant_id":
            if not request.target.tenant_id:
                raise InvalidPublish("target.tenant_id is empty")
            result = await self.delivery.to_tenant(request.target.tenant_id, message)
        else:
            raise InvalidPublish("target is required (connection_id, user_id or tenant_id)")
        outcome = "no_match" if not result.matched else ("delivered" if not result.failed else "undelivered")
        PUBLISHED.labels(target=kind.removesuffix("_id"), outcome=outcome).inc()
        log.info(
            "published",
            extra={
                "target": kind,
                "matched": result.matched,
                "delivered": result.delivered,
                "failed": result.failed,
            },
        )
        return result

    async def serve(
        self, request: router_pb2.PublishRequest, context: aio.ServicerContext, *, gate: CallerPolicy
    ) -> router_pb2.PublishResponse:
        """The gRPC method body: the caller policy first (the tenant of a user or tenant target;
        of a connection target once its record is read), INVALID_ARGUMENT for a malformed request."""
        target = request.target
        tenants = [request.tenant_id] if target.HasField("user_id") else []
        if target.HasField("tenant_id"):
            tenants = [target.tenant_id]
        caller = await gate.admit(context, "Publish", tenants)
        try:
            result = await self.publish(request, may_reach=lambda t: gate.allows(caller, "Publish", [t]))
        except TenantNotAllowed as exc:
            await gate.refuse(context, caller, "Publish", [exc.tenant_id])
            raise
        except InvalidPublish as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this line only satisfies the type checker
        except StoreError as exc:
            log.warning("publish failed: %s", exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "connection storage is unavailable")
            raise
        return router_pb2.PublishResponse(
            matched=result.matched, delivered=result.delivered, failed=result.failed
        )
