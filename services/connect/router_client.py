"""The gateway's side of the router's ``Route`` call.

One long-lived channel to the router (its Service spreads calls over replicas). Every
call has the deadline ``ws_route_timeout_seconds`` and does not wait for the channel
to become ready: when the router is down the client should hear so at once, as a
retryable ``SERVICE_UNAVAILABLE``, not after the deadline.
"""

from __future__ import annotations

import grpc
from grpc import aio

from streamer import callers, rpc
from streamer.api.v1 import common_pb2, router_pb2, router_pb2_grpc
from streamer.auth import Identity
from streamer.protocol import ClientMessage


class RouterUnavailable(Exception):
    """The router could not answer (any gRPC failure); ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class RouterClient:
    def __init__(
        self,
        *,
        address: str,
        timeout: float,
        endpoint: str = "",
        max_message_bytes: int = rpc.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.address = address
        self.timeout = timeout
        #: This pod's Connections address, sent with every call (see RouteRequest).
        self.endpoint = endpoint
        self._channel = rpc.channel(address, max_message_bytes=max_message_bytes)
        self._stub = router_pb2_grpc.RouterStub(self._channel)

    async def route(
        self, *, connection_id: str, identity: Identity, message: ClientMessage, request_id: str
    ) -> list[bytes]:
        """The frames the router answers, in order; :class:`RouterUnavailable` on any failure."""
        request = router_pb2.RouteRequest(
            connection_id=connection_id,
            principal=common_pb2.Principal(
                user_id=identity.user_id, tenant_id=identity.tenant_id, permissions=list(identity.permissions)
            ),
            action=message.action,
            request_id=request_id,
            payload=rpc.dumps(message.payload),
            metadata=rpc.dumps(message.metadata),
            connection_endpoint=self.endpoint,
        )
        try:
            response = await self._stub.Route(
                request, timeout=self.timeout, wait_for_ready=False, metadata=callers.call_metadata()
            )
        except aio.AioRpcError as exc:
            raise RouterUnavailable(exc.code().name, exc.details() or "") from None
        except grpc.RpcError as exc:  # pragma: no cover - aio raises AioRpcError
            raise RouterUnavailable("UNKNOWN", str(exc)) from None
        return list(response.frames)

    async def close(self) -> None:
        await self._channel.close(None)
